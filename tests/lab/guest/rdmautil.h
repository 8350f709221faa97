/* SPDX-License-Identifier: Apache-2.0 OR MIT */
/*
 * Small helpers shared by the in-guest RDMA checks: open the soft-RoCE
 * device, find a RoCE v2 GID, build connected RC QP pairs inside one
 * process, post one work request and wait for its completion.
 *
 * Every check prints exactly one line "@@CHK <name> PASS|FAIL <detail>";
 * the lab harness counts those lines.
 */
#ifndef MEMGATE_LAB_RDMAUTIL_H
#define MEMGATE_LAB_RDMAUTIL_H

#include <infiniband/verbs.h>
#include <stdint.h>

/* Seconds to wait for one completion; TCG guests are slow. */
#define LAB_CQ_TIMEOUT_S 30

struct lab_dev {
	struct ibv_context *ctx;
	union ibv_gid gid;
	int gid_index;
	uint8_t port;
};

/* One RC QP with its own CQ (used for both send and receive). */
struct lab_qp {
	struct ibv_cq *cq;
	struct ibv_qp *qp;
};

extern int lab_failures;

/* Prints one check line and counts failures; returns ok. */
int lab_check(const char *name, int ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Opens the named device (or the first one when name is NULL). */
int lab_open(struct lab_dev *dev, const char *name);

/* Creates an RC QP in pd with its own CQ. */
int lab_qp_create(struct lab_dev *dev, struct ibv_pd *pd, struct lab_qp *q);

/* Moves a and b through INIT/RTR/RTS connected to each other. */
int lab_qp_connect(struct lab_dev *dev, struct lab_qp *a, struct lab_qp *b);

void lab_qp_destroy(struct lab_qp *q);

/*
 * Posts one signalled work request and waits for its completion.
 * Returns the completion status, or -1 if posting failed or no
 * completion arrived in time (errno says which).
 */
int lab_post_wait(struct lab_qp *q, struct ibv_send_wr *wr);

/* Waits for the next completion on q; status or -1 on timeout. */
int lab_wait(struct lab_qp *q, struct ibv_wc *wc);

/* RDMA READ of len bytes at raddr/rkey into the local MR; returns status. */
int lab_read(struct lab_qp *q, struct ibv_mr *local, void *dst, uint32_t len,
	     uint64_t raddr, uint32_t rkey);

/* Current state of a QP, or -1. */
int lab_qp_state(struct ibv_qp *qp);

#endif
