//! Pure policy engine: policy documents, signatures, export tokens and decisions.
