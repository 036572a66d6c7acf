//! Shared helpers for certbind's end-to-end tests: free ports, processes, PKI.
