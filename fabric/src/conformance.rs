//! The conformance suite, written against the provider-neutral API.
