//! Black-box tests: real `tend` processes, real etcd, several hosts on loopback.
//! The helpers here start and stop etcd and `tend` processes for the tests in `tests/`.
