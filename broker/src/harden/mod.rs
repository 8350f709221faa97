//! Process hardening of memgated: capabilities, no_new_privs, seccomp and Landlock.
