// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * Helpers for the in-guest RDMA checks (see rdmautil.h).
 */
#include "rdmautil.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int lab_failures;

int lab_check(const char *name, int ok, const char *fmt, ...)
{
	va_list ap;

	printf("@@CHK %s %s ", name, ok ? "PASS" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	if (!ok)
		lab_failures++;
	return ok;
}

/* A RoCE v2 GID that carries an IPv4 address (::ffff:a.b.c.d). */
static int is_v4_mapped(const union ibv_gid *g)
{
	static const uint8_t prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

	return memcmp(g->raw, prefix, sizeof(prefix)) == 0;
}

int lab_open(struct lab_dev *dev, const char *name)
{
	struct ibv_device **list;
	struct ibv_port_attr pattr;
	int n, i;

	memset(dev, 0, sizeof(*dev));
	dev->port = 1;
	list = ibv_get_device_list(&n);
	if (!list)
		return -1;
	for (i = 0; i < n; i++) {
		if (!name || strcmp(ibv_get_device_name(list[i]), name) == 0) {
			dev->ctx = ibv_open_device(list[i]);
			break;
		}
	}
	ibv_free_device_list(list);
	if (!dev->ctx)
		return -1;
	if (ibv_query_port(dev->ctx, dev->port, &pattr))
		return -1;
	for (i = 0; i < pattr.gid_tbl_len; i++) {
		union ibv_gid g;

		if (ibv_query_gid(dev->ctx, dev->port, i, &g))
			continue;
		if (is_v4_mapped(&g)) {
			dev->gid = g;
			dev->gid_index = i;
			return 0;
		}
	}
	errno = ENOENT;
	return -1;
}

int lab_qp_create(struct lab_dev *dev, struct ibv_pd *pd, struct lab_qp *q)
{
	struct ibv_qp_init_attr ia;

	memset(q, 0, sizeof(*q));
	q->cq = ibv_create_cq(dev->ctx, 64, NULL, NULL, 0);
	if (!q->cq)
		return -1;
	memset(&ia, 0, sizeof(ia));
	ia.send_cq = q->cq;
	ia.recv_cq = q->cq;
	ia.qp_type = IBV_QPT_RC;
	ia.cap.max_send_wr = 16;
	ia.cap.max_recv_wr = 16;
	ia.cap.max_send_sge = 1;
	ia.cap.max_recv_sge = 1;
	q->qp = ibv_create_qp(pd, &ia);
	return q->qp ? 0 : -1;
}

static int to_init(struct lab_dev *dev, struct lab_qp *q)
{
	struct ibv_qp_attr a;

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_INIT;
	a.port_num = dev->port;
	/* The responder grants both; memory keys decide what is allowed. */
	a.qp_access_flags = IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE;
	return ibv_modify_qp(q->qp, &a, IBV_QP_STATE | IBV_QP_PKEY_INDEX |
			     IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
}

static int to_rtr_rts(struct lab_dev *dev, struct lab_qp *q, uint32_t peer)
{
	struct ibv_qp_attr a;

	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTR;
	a.path_mtu = IBV_MTU_1024;
	a.dest_qp_num = peer;
	a.rq_psn = 1;
	a.max_dest_rd_atomic = 4;
	a.min_rnr_timer = 12;
	a.ah_attr.is_global = 1;
	a.ah_attr.grh.dgid = dev->gid;
	a.ah_attr.grh.sgid_index = dev->gid_index;
	a.ah_attr.grh.hop_limit = 1;
	a.ah_attr.port_num = dev->port;
	if (ibv_modify_qp(q->qp, &a, IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU |
			  IBV_QP_DEST_QPN | IBV_QP_RQ_PSN |
			  IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER))
		return -1;
	memset(&a, 0, sizeof(a));
	a.qp_state = IBV_QPS_RTS;
	a.timeout = 14;
	a.retry_cnt = 3;
	a.rnr_retry = 3;
	a.sq_psn = 1;
	a.max_rd_atomic = 4;
	return ibv_modify_qp(q->qp, &a, IBV_QP_STATE | IBV_QP_TIMEOUT |
			     IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
			     IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
}

int lab_qp_connect(struct lab_dev *dev, struct lab_qp *a, struct lab_qp *b)
{
	if (to_init(dev, a) || to_init(dev, b))
		return -1;
	if (to_rtr_rts(dev, a, b->qp->qp_num) || to_rtr_rts(dev, b, a->qp->qp_num))
		return -1;
	return 0;
}

void lab_qp_destroy(struct lab_qp *q)
{
	if (q->qp)
		ibv_destroy_qp(q->qp);
	if (q->cq)
		ibv_destroy_cq(q->cq);
	memset(q, 0, sizeof(*q));
}

int lab_wait(struct lab_qp *q, struct ibv_wc *wc)
{
	struct timespec start, now;
	int n;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		n = ibv_poll_cq(q->cq, 1, wc);
		if (n < 0)
			return -1;
		if (n == 1)
			return (int)wc->status;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec > LAB_CQ_TIMEOUT_S) {
			errno = ETIMEDOUT;
			return -1;
		}
		nanosleep(&(struct timespec){ .tv_nsec = 200000 }, NULL);
	}
}

int lab_post_wait(struct lab_qp *q, struct ibv_send_wr *wr)
{
	struct ibv_send_wr *bad = NULL;
	struct ibv_wc wc;
	int rc;

	wr->send_flags |= IBV_SEND_SIGNALED;
	rc = ibv_post_send(q->qp, wr, &bad);
	if (rc) {
		errno = rc;
		return -1;
	}
	return lab_wait(q, &wc);
}

int lab_read(struct lab_qp *q, struct ibv_mr *local, void *dst, uint32_t len,
	     uint64_t raddr, uint32_t rkey)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)dst, .length = len, .lkey = local->lkey,
	};
	struct ibv_send_wr wr;

	memset(&wr, 0, sizeof(wr));
	wr.wr_id = 1;
	wr.opcode = IBV_WR_RDMA_READ;
	wr.sg_list = &sge;
	wr.num_sge = 1;
	wr.wr.rdma.remote_addr = raddr;
	wr.wr.rdma.rkey = rkey;
	return lab_post_wait(q, &wr);
}

int lab_qp_state(struct ibv_qp *qp)
{
	struct ibv_qp_attr a;
	struct ibv_qp_init_attr ia;

	if (ibv_query_qp(qp, &a, IBV_QP_STATE, &ia))
		return -1;
	return (int)a.qp_state;
}
