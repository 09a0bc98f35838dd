//! libproxify.so
