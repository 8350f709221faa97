//! The RDMA abstraction both the broker and the fault server use.
