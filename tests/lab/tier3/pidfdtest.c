// SPDX-License-Identifier: Apache-2.0 OR MIT
/*
 * pidfdtest: proves, on a kernel with the mlx5-patch/ series and the
 * rdma-core from libverbs-patch/, that ibv_reg_mr_pidfd() registers
 * another process's memory and that the kernel refuses every registration
 * it must refuse.
 *
 *   - a target process maps and fills a buffer; the registrar (a different
 *     process, which has nothing at that address) registers it through a
 *     pidfd and RDMA-READs it over soft-RoCE byte-exact, directly and
 *     through a type-2 memory window; pinned_vm is charged to the target;
 *     the MR keeps serving the pages after the target exits;
 *   - refused: write access (EINVAL), no CAP_IPC_LOCK (EPERM), no ptrace
 *     rights over the target (EPERM; the same caller succeeds on its own
 *     child), a pidfd whose process is gone (ESRCH), an fd that is not a
 *     pidfd (EBADF), re-registration of the foreign MR.
 *
 * Usage: pidfdtest [device]   (one "@@CHK ..." line per check, exit 1 on failure)
 * Must run as root (it drops privileges in children).
 */
#define _GNU_SOURCE
#include "rdmautil.h"

#include <errno.h>
#include <linux/capability.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define BUF_LEN (64 * 1024)
#define UNPRIV_UID 61007
#define RO_ACCESS (IBV_ACCESS_REMOTE_READ | IBV_ACCESS_MW_BIND)

/* A child process holding a filled buffer until told to exit. */
struct target {
	pid_t pid;
	int pidfd;
	uint64_t addr;
	int hold_fd; /* closing it lets the target exit */
};

static void fill_pattern(unsigned char *p, size_t n, unsigned int seed)
{
	size_t i;

	for (i = 0; i < n; i++)
		p[i] = (unsigned char)((i * 167u + seed) ^ (i >> 9));
}

static int pidfd_open(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

/*
 * Forks a target that maps BUF_LEN bytes after the fork (so the parent has
 * nothing at that address), fills them with seed's pattern, reports the
 * address and waits until hold_fd is closed.
 */
static int target_start(struct target *t, unsigned int seed)
{
	int addr_pipe[2], hold_pipe[2];
	unsigned char *buf;
	char c;

	if (pipe(addr_pipe) || pipe(hold_pipe))
		return -1;
	t->pid = fork();
	if (t->pid < 0)
		return -1;
	if (t->pid == 0) {
		close(addr_pipe[0]);
		close(hold_pipe[1]);
		/* a hint far from the parent's heap and libraries */
		buf = mmap((void *)0x7e0000000000ull, BUF_LEN, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (buf == MAP_FAILED)
			_exit(2);
		fill_pattern(buf, BUF_LEN, seed);
		t->addr = (uintptr_t)buf;
		if (write(addr_pipe[1], &t->addr, sizeof(t->addr)) != sizeof(t->addr))
			_exit(3);
		while (read(hold_pipe[0], &c, 1) > 0)
			;
		_exit(0);
	}
	close(addr_pipe[1]);
	close(hold_pipe[0]);
	t->hold_fd = hold_pipe[1];
	if (read(addr_pipe[0], &t->addr, sizeof(t->addr)) != sizeof(t->addr))
		return -1;
	close(addr_pipe[0]);
	t->pidfd = pidfd_open(t->pid);
	return t->pidfd < 0 ? -1 : 0;
}

static void target_stop(struct target *t)
{
	close(t->hold_fd);
	waitpid(t->pid, NULL, 0);
}

static long vmpin_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmPin: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* Clears (or keeps only) CAP_IPC_LOCK in the effective and permitted sets. */
static int set_caps(int ipc_lock_only, int drop_ipc_lock)
{
	struct __user_cap_header_struct hdr = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	unsigned int bit = 1u << (CAP_IPC_LOCK % 32);

	memset(d, 0, sizeof(d));
	if (syscall(SYS_capget, &hdr, d))
		return -1;
	if (ipc_lock_only) {
		memset(d, 0, sizeof(d));
		d[0].effective = d[0].permitted = bit;
	}
	if (drop_ipc_lock) {
		d[0].effective &= ~bit;
		d[0].permitted &= ~bit;
	}
	d[0].inheritable = d[1].inheritable = 0;
	return (int)syscall(SYS_capset, &hdr, d);
}

/* Registers in a fresh context and PD; returns 0 on success or the errno. */
static int try_reg(struct lab_dev *dev, int pidfd, uint64_t addr,
		   unsigned int access)
{
	struct ibv_pd *pd = ibv_alloc_pd(dev->ctx);
	struct ibv_mr *mr;
	int err;

	if (!pd)
		return errno ? errno : EIO;
	errno = 0;
	mr = ibv_reg_mr_pidfd(pd, pidfd, addr, BUF_LEN, addr, access);
	err = mr ? 0 : (errno ? errno : EIO);
	if (mr)
		ibv_dereg_mr(mr);
	ibv_dealloc_pd(pd);
	return err;
}

/*
 * Runs fn in a forked child that opens its own device context first; the
 * child's exit status is fn's result (an errno, 0 for success, 255 for a
 * set-up failure).
 */
static int in_child(const char *devname, int (*fn)(struct lab_dev *, void *),
		    void *arg)
{
	struct lab_dev dev;
	int status;
	pid_t pid;

	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return 255;
	if (pid == 0) {
		if (lab_open(&dev, devname))
			_exit(255);
		_exit(fn(&dev, arg) & 0xff);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return 255;
	return WEXITSTATUS(status);
}

static int no_ipc_lock(struct lab_dev *dev, void *arg)
{
	struct target *t = arg;

	if (set_caps(0, 1))
		return 255;
	return try_reg(dev, t->pidfd, t->addr, RO_ACCESS);
}

/*
 * Drops to an unprivileged uid keeping only CAP_IPC_LOCK, then registers a
 * root-owned target (expected EPERM) and its own child (expected success,
 * so EPERM above is the ptrace check and nothing else). The result packs
 * both: foreign errno | (own child errno << 4), each clipped to 4 bits
 * except that EPERM (1) and success (0) survive unchanged.
 */
static int unprivileged(struct lab_dev *dev, void *arg)
{
	struct target *t = arg, own;
	int foreign, mine;

	if (prctl(PR_SET_KEEPCAPS, 1) || setresgid(UNPRIV_UID, UNPRIV_UID, UNPRIV_UID) ||
	    setresuid(UNPRIV_UID, UNPRIV_UID, UNPRIV_UID) || set_caps(1, 0))
		return 255;
	/* a uid change makes the mm non-dumpable, which would block even our own child */
	prctl(PR_SET_DUMPABLE, 1);
	foreign = try_reg(dev, t->pidfd, t->addr, RO_ACCESS);
	if (target_start(&own, 11))
		return 255;
	mine = try_reg(dev, own.pidfd, own.addr, RO_ACCESS);
	target_stop(&own);
	return (foreign > 15 ? 15 : foreign) | ((mine > 15 ? 15 : mine) << 4);
}

static int bind_and_read(struct lab_qp *srv, struct lab_qp *cli,
			 struct ibv_pd *pd, struct ibv_mr *mr,
			 struct ibv_mr *local, unsigned char *dst,
			 const unsigned char *want, char *why, size_t whylen)
{
	struct ibv_mw *mw = ibv_alloc_mw(pd, IBV_MW_TYPE_2);
	struct ibv_send_wr wr;
	uint32_t rkey;
	int st;

	if (!mw)
		return snprintf(why, whylen, "alloc_mw: %s", strerror(errno)), 0;
	rkey = ibv_inc_rkey(mw->rkey);
	memset(&wr, 0, sizeof(wr));
	wr.wr_id = 7;
	wr.opcode = IBV_WR_BIND_MW;
	wr.bind_mw.mw = mw;
	wr.bind_mw.rkey = rkey;
	wr.bind_mw.bind_info.mr = mr;
	wr.bind_mw.bind_info.addr = (uintptr_t)mr->addr + 4096;
	wr.bind_mw.bind_info.length = 8192;
	wr.bind_mw.bind_info.mw_access_flags = IBV_ACCESS_REMOTE_READ;
	st = lab_post_wait(srv, &wr);
	if (st != IBV_WC_SUCCESS)
		return snprintf(why, whylen, "bind status=%d", st), 0;
	memset(dst, 0, 8192);
	st = lab_read(cli, local, dst, 8192, (uintptr_t)mr->addr + 4096, rkey);
	snprintf(why, whylen, "mw rkey=0x%x read status=%d", rkey, st);
	ibv_dealloc_mw(mw);
	return st == IBV_WC_SUCCESS && memcmp(dst, want + 4096, 8192) == 0;
}

int main(int argc, char **argv)
{
	const char *devname = argc > 1 ? argv[1] : NULL;
	unsigned char *want, *local_buf;
	struct ibv_pd *pd, *peer_pd;
	struct ibv_mr *mr, *local;
	struct lab_qp srv, cli;
	struct target t, gone;
	struct lab_dev dev;
	char why[128];
	long pin_t, pin_me;
	int st, err, fds[2];

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!lab_check("tier3_device", lab_open(&dev, devname) == 0, "device=%s",
		       devname ? devname : "(first)"))
		return 1;
	want = malloc(BUF_LEN);
	local_buf = aligned_alloc(4096, BUF_LEN);
	pd = ibv_alloc_pd(dev.ctx);
	peer_pd = ibv_alloc_pd(dev.ctx);
	if (!want || !local_buf || !pd || !peer_pd || target_start(&t, 29))
		return lab_check("tier3_setup", 0, "%s", strerror(errno)), 1;
	fill_pattern(want, BUF_LEN, 29);
	local = ibv_reg_mr(peer_pd, local_buf, BUF_LEN, IBV_ACCESS_LOCAL_WRITE);
	if (!local || lab_qp_create(&dev, pd, &srv) || lab_qp_create(&dev, peer_pd, &cli) ||
	    lab_qp_connect(&dev, &srv, &cli))
		return lab_check("tier3_setup", 0, "qp/mr: %s", strerror(errno)), 1;

	/* The registrar has nothing at the target's address. */
	lab_check("registrar_lacks_mapping",
		  msync((void *)(uintptr_t)t.addr, 4096, MS_ASYNC) != 0 && errno == ENOMEM,
		  "addr=0x%llx", (unsigned long long)t.addr);

	pin_me = vmpin_kb(getpid());
	errno = 0;
	mr = ibv_reg_mr_pidfd(pd, t.pidfd, t.addr, BUF_LEN, t.addr, RO_ACCESS);
	if (!lab_check("reg_mr_pidfd", mr != NULL, "%s lkey=0x%x rkey=0x%x",
		       mr ? "ok" : strerror(errno), mr ? mr->lkey : 0, mr ? mr->rkey : 0))
		return 1;

	pin_t = vmpin_kb(t.pid);
	lab_check("pinned_vm_charged_to_target",
		  pin_t >= BUF_LEN / 1024 && vmpin_kb(getpid()) == pin_me,
		  "target VmPin=%ld kB registrar VmPin=%ld kB", pin_t, vmpin_kb(getpid()));

	memset(local_buf, 0, BUF_LEN);
	st = lab_read(&cli, local, local_buf, BUF_LEN, t.addr, mr->rkey);
	lab_check("rdma_read_foreign_byte_exact",
		  st == IBV_WC_SUCCESS && memcmp(local_buf, want, BUF_LEN) == 0,
		  "status=%d bytes=%d", st, BUF_LEN);

	lab_check("mw_type2_over_foreign_mr",
		  bind_and_read(&srv, &cli, pd, mr, local, local_buf, want, why, sizeof(why)),
		  "%s", why);

	err = ibv_rereg_mr(mr, IBV_REREG_MR_CHANGE_ACCESS, NULL, NULL, 0,
			   IBV_ACCESS_REMOTE_READ | IBV_ACCESS_REMOTE_WRITE |
			   IBV_ACCESS_LOCAL_WRITE);
	lab_check("rereg_foreign_refused", err != 0, "rc=%d errno=%s", err,
		  strerror(errno));

	err = try_reg(&dev, t.pidfd, t.addr, IBV_ACCESS_REMOTE_READ |
		      IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE);
	lab_check("write_access_refused", err == EINVAL, "errno=%s", strerror(err));

	err = in_child(devname, no_ipc_lock, &t);
	lab_check("no_cap_ipc_lock_refused", err == EPERM, "errno=%d (%s)", err,
		  err == 255 ? "child set-up failed" : strerror(err));

	err = in_child(devname, unprivileged, &t);
	lab_check("no_ptrace_rights_eperm", err != 255 && (err & 15) == EPERM,
		  "foreign errno=%d", err == 255 ? -1 : err & 15);
	lab_check("unprivileged_own_child_ok", err != 255 && (err >> 4) == 0,
		  "own-child errno=%d (shows the EPERM above is the ptrace check)",
		  err == 255 ? -1 : err >> 4);

	if (target_start(&gone, 3) == 0) {
		kill(gone.pid, SIGKILL);
		waitpid(gone.pid, NULL, 0);
		close(gone.hold_fd);
		err = try_reg(&dev, gone.pidfd, gone.addr, RO_ACCESS);
		lab_check("stale_pidfd_refused", err == ESRCH, "errno=%s", strerror(err));
	} else {
		lab_check("stale_pidfd_refused", 0, "set-up: %s", strerror(errno));
	}

	if (pipe(fds) == 0) {
		err = try_reg(&dev, fds[0], t.addr, RO_ACCESS);
		lab_check("non_pidfd_refused", err == EBADF, "errno=%s", strerror(err));
	}

	/* The MR holds its pages, not the process: they outlive the target. */
	target_stop(&t);
	memset(local_buf, 0, BUF_LEN);
	st = lab_read(&cli, local, local_buf, BUF_LEN, t.addr, mr->rkey);
	lab_check("read_after_target_exit",
		  st == IBV_WC_SUCCESS && memcmp(local_buf, want, BUF_LEN) == 0,
		  "status=%d", st);
	lab_check("dereg_foreign_mr", ibv_dereg_mr(mr) == 0, "ok");
	return lab_failures ? 1 : 0;
}
