//! Assembles source → ring → stream worker → stages → sinks from a config; threads and lifecycle.
