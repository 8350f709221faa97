//! The admission pipeline: every check an `Export` request passes before any memory is
//! registered, one module and one error type per step, each denial with a code.
