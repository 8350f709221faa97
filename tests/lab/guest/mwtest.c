// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * mwtest: proves, against a real kernel RDMA device and the real
 * rdma-core, the memory-window semantics memgate relies on:
 *
 *   - a type-2 memory window bound on one QP with REMOTE_READ only
 *     lets that QP's peer READ the bound bytes exactly;
 *   - the same rkey used through another QP is refused;
 *   - after LOCAL_INV the READ fails with REM_ACCESS_ERR, the requester
 *     QP goes to the error state and later work requests are flushed;
 *   - an RDMA WRITE through a read-only window is refused.
 *
 * Usage: mwtest [device]   (prints "@@CHK ..." lines, exits 1 on failure)
 */
#include "rdmautil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_LEN (64 * 1024)
#define WIN_OFF 4096
#define WIN_LEN 8192

/* The exporter side: the memory, its MR and the QPs peers talk to. */
struct exporter {
	struct ibv_pd *pd;
	unsigned char *buf;
	struct ibv_mr *mr;
};

/* The importer side: a separate PD with a local landing buffer. */
struct importer {
	struct ibv_pd *pd;
	unsigned char *buf;
	struct ibv_mr *mr;
};

static void fill_pattern(unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)((i * 131u + 7u) ^ (i >> 8));
}

/* Binds mw on q (type 2: the window belongs to this QP); returns status. */
static int bind_window(struct lab_qp *q, struct ibv_mw *mw, struct ibv_mr *mr,
		       uint64_t addr, uint64_t len, unsigned int access,
		       uint32_t rkey)
{
	struct ibv_send_wr wr;

	memset(&wr, 0, sizeof(wr));
	wr.wr_id = 2;
	wr.opcode = IBV_WR_BIND_MW;
	wr.bind_mw.mw = mw;
	wr.bind_mw.rkey = rkey;
	wr.bind_mw.bind_info.mr = mr;
	wr.bind_mw.bind_info.addr = addr;
	wr.bind_mw.bind_info.length = len;
	wr.bind_mw.bind_info.mw_access_flags = access;
	return lab_post_wait(q, &wr);
}

static int local_inv(struct lab_qp *q, uint32_t rkey)
{
	struct ibv_send_wr wr;

	memset(&wr, 0, sizeof(wr));
	wr.wr_id = 3;
	wr.opcode = IBV_WR_LOCAL_INV;
	wr.invalidate_rkey = rkey;
	return lab_post_wait(q, &wr);
}

static int write_to(struct lab_qp *q, struct importer *im, uint64_t raddr,
		    uint32_t rkey)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)im->buf, .length = 512, .lkey = im->mr->lkey,
	};
	struct ibv_send_wr wr;

	memset(&wr, 0, sizeof(wr));
	wr.wr_id = 4;
	wr.opcode = IBV_WR_RDMA_WRITE;
	wr.sg_list = &sge;
	wr.num_sge = 1;
	wr.wr.rdma.remote_addr = raddr;
	wr.wr.rdma.rkey = rkey;
	return lab_post_wait(q, &wr);
}

/*
 * Posts two READs in one chain (the first through the revoked rkey, the
 * second through a valid one) and checks the first fails with
 * REM_ACCESS_ERR and the second is flushed; then the QP state.
 */
static void check_revoked(struct lab_qp *c, struct importer *im,
			  uint64_t raddr, uint32_t dead_rkey,
			  uint32_t good_rkey)
{
	struct ibv_sge s1 = { (uintptr_t)im->buf, 256, im->mr->lkey };
	struct ibv_sge s2 = { (uintptr_t)im->buf + 256, 256, im->mr->lkey };
	struct ibv_send_wr w1, w2, *bad = NULL;
	struct ibv_wc wc;
	int st1, st2, rc, state;

	memset(&w1, 0, sizeof(w1));
	memset(&w2, 0, sizeof(w2));
	w1.wr_id = 10;
	w1.opcode = IBV_WR_RDMA_READ;
	w1.sg_list = &s1;
	w1.num_sge = 1;
	w1.send_flags = IBV_SEND_SIGNALED;
	w1.wr.rdma.remote_addr = raddr;
	w1.wr.rdma.rkey = dead_rkey;
	w1.next = &w2;
	w2 = w1;
	w2.wr_id = 11;
	w2.sg_list = &s2;
	w2.next = NULL;
	w2.wr.rdma.rkey = good_rkey;
	rc = ibv_post_send(c->qp, &w1, &bad);
	if (rc) {
		lab_check("revoked_read_rem_access_err", 0, "post: %s", strerror(rc));
		return;
	}
	st1 = lab_wait(c, &wc);
	lab_check("revoked_read_rem_access_err",
		  st1 == IBV_WC_REM_ACCESS_ERR && wc.wr_id == 10,
		  "status=%d (%s) wr_id=%llu", st1,
		  st1 >= 0 ? ibv_wc_status_str(st1) : "timeout",
		  (unsigned long long)wc.wr_id);
	st2 = lab_wait(c, &wc);
	lab_check("later_wr_flushed", st2 == IBV_WC_WR_FLUSH_ERR && wc.wr_id == 11,
		  "status=%d (%s) wr_id=%llu", st2,
		  st2 >= 0 ? ibv_wc_status_str(st2) : "timeout",
		  (unsigned long long)wc.wr_id);
	state = lab_qp_state(c->qp);
	lab_check("requester_qp_error_state", state == IBV_QPS_ERR, "state=%d", state);
	/* A READ posted after the error is flushed too. */
	st2 = lab_read(c, im->mr, im->buf, 64, raddr, good_rkey);
	lab_check("post_after_error_flushed", st2 == IBV_WC_WR_FLUSH_ERR,
		  "status=%d (%s)", st2,
		  st2 >= 0 ? ibv_wc_status_str(st2) : strerror(errno));
}

int main(int argc, char **argv)
{
	const char *devname = argc > 1 ? argv[1] : NULL;
	struct lab_qp s1, c1, s2, c2, s3, c3;
	struct ibv_mw *mw = NULL, *mw_ro = NULL;
	struct ibv_device_attr_ex dattr;
	struct exporter ex;
	struct importer im;
	struct lab_dev dev;
	uint64_t win;
	uint32_t rkey, rkey_ro;
	int st;

	setvbuf(stdout, NULL, _IOLBF, 0);
	st = lab_open(&dev, devname);
	if (!lab_check("device_present", st == 0, "device=%s gid_index=%d",
		       devname ? devname : "(first)", dev.gid_index))
		return 1;
	memset(&dattr, 0, sizeof(dattr));
	st = ibv_query_device_ex(dev.ctx, NULL, &dattr);
	if (!lab_check("device_mw_type2", st == 0 &&
		       (dattr.orig_attr.device_cap_flags & IBV_DEVICE_MEM_WINDOW_TYPE_2B),
		       "cap_flags=0x%x", dattr.orig_attr.device_cap_flags))
		return 1;

	ex.pd = ibv_alloc_pd(dev.ctx);
	im.pd = ibv_alloc_pd(dev.ctx);
	ex.buf = aligned_alloc(4096, BUF_LEN);
	im.buf = aligned_alloc(4096, BUF_LEN);
	if (!ex.pd || !im.pd || !ex.buf || !im.buf)
		return lab_check("setup", 0, "pd/buffer allocation failed"), 1;
	fill_pattern(ex.buf, BUF_LEN);
	memset(im.buf, 0, BUF_LEN);

	ex.mr = ibv_reg_mr(ex.pd, ex.buf, BUF_LEN,
			   IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_READ |
			   IBV_ACCESS_MW_BIND);
	if (!lab_check("mr_register", ex.mr != NULL, "lkey=0x%x rkey=0x%x",
		       ex.mr ? ex.mr->lkey : 0, ex.mr ? ex.mr->rkey : 0))
		return 1;
	im.mr = ibv_reg_mr(im.pd, im.buf, BUF_LEN, IBV_ACCESS_LOCAL_WRITE);
	if (!im.mr)
		return lab_check("setup", 0, "importer MR: %s", strerror(errno)), 1;

	/* Three connections: bound QP, a stranger QP, a write-probe QP. */
	if (lab_qp_create(&dev, ex.pd, &s1) || lab_qp_create(&dev, im.pd, &c1) ||
	    lab_qp_create(&dev, ex.pd, &s2) || lab_qp_create(&dev, im.pd, &c2) ||
	    lab_qp_create(&dev, ex.pd, &s3) || lab_qp_create(&dev, im.pd, &c3) ||
	    lab_qp_connect(&dev, &s1, &c1) || lab_qp_connect(&dev, &s2, &c2) ||
	    lab_qp_connect(&dev, &s3, &c3))
		return lab_check("qp_connect", 0, "%s", strerror(errno)), 1;
	lab_check("qp_connect", 1, "3 RC pairs RTS");

	/* Plain MR read: the fabric works at all. */
	st = lab_read(&c1, im.mr, im.buf, 4096, (uintptr_t)ex.buf, ex.mr->rkey);
	lab_check("read_via_mr", st == IBV_WC_SUCCESS &&
		  memcmp(im.buf, ex.buf, 4096) == 0, "status=%d", st);

	mw = ibv_alloc_mw(ex.pd, IBV_MW_TYPE_2);
	mw_ro = ibv_alloc_mw(ex.pd, IBV_MW_TYPE_2);
	if (!lab_check("mw_alloc_type2", mw && mw_ro, "%s", mw ? "ok" : strerror(errno)))
		return 1;
	win = (uintptr_t)ex.buf + WIN_OFF;
	rkey = ibv_inc_rkey(mw->rkey);
	st = bind_window(&s1, mw, ex.mr, win, WIN_LEN, IBV_ACCESS_REMOTE_READ, rkey);
	lab_check("mw_bind_read_only", st == IBV_WC_SUCCESS, "status=%d rkey=0x%x", st, rkey);

	memset(im.buf, 0, BUF_LEN);
	st = lab_read(&c1, im.mr, im.buf, WIN_LEN, win, rkey);
	lab_check("read_via_mw_exact", st == IBV_WC_SUCCESS &&
		  memcmp(im.buf, ex.buf + WIN_OFF, WIN_LEN) == 0,
		  "status=%d len=%d", st, WIN_LEN);

	/* The window belongs to s1: s2's peer must not use its rkey. */
	memset(im.buf, 0, BUF_LEN);
	st = lab_read(&c2, im.mr, im.buf, 4096, win, rkey);
	lab_check("read_via_mw_other_qp_refused",
		  st == IBV_WC_REM_ACCESS_ERR && im.buf[0] == 0 && im.buf[1] == 0,
		  "status=%d (%s)", st, st >= 0 ? ibv_wc_status_str(st) : "timeout");

	/* A read-only window refuses writes (on its own QP pair). */
	rkey_ro = ibv_inc_rkey(mw_ro->rkey);
	st = bind_window(&s3, mw_ro, ex.mr, win, WIN_LEN, IBV_ACCESS_REMOTE_READ, rkey_ro);
	if (lab_check("mw2_bind_read_only", st == IBV_WC_SUCCESS, "status=%d", st)) {
		unsigned char before[512];

		memcpy(before, ex.buf + WIN_OFF, sizeof(before));
		memset(im.buf, 0xEE, 512);
		st = write_to(&c3, &im, win, rkey_ro);
		lab_check("write_via_ro_mw_refused",
			  st == IBV_WC_REM_ACCESS_ERR &&
			  memcmp(before, ex.buf + WIN_OFF, sizeof(before)) == 0,
			  "status=%d (%s)", st, st >= 0 ? ibv_wc_status_str(st) : "timeout");
	}

	/* Revocation: LOCAL_INV on the owning QP, then the peer's READ fails. */
	st = local_inv(&s1, rkey);
	lab_check("mw_local_inv", st == IBV_WC_SUCCESS, "status=%d", st);
	check_revoked(&c1, &im, win, rkey, ex.mr->rkey);

	lab_qp_destroy(&c1);
	lab_qp_destroy(&s1);
	lab_qp_destroy(&c2);
	lab_qp_destroy(&s2);
	lab_qp_destroy(&c3);
	lab_qp_destroy(&s3);
	lab_check("mw_dealloc", ibv_dealloc_mw(mw) == 0 && ibv_dealloc_mw(mw_ro) == 0, "ok");
	lab_check("mr_dereg", ibv_dereg_mr(ex.mr) == 0 && ibv_dereg_mr(im.mr) == 0, "ok");
	ibv_dealloc_pd(ex.pd);
	ibv_dealloc_pd(im.pd);
	ibv_close_device(dev.ctx);
	free(ex.buf);
	free(im.buf);
	return lab_failures ? 1 : 0;
}
