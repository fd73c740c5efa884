//! Daemon integration: systemd notify protocol (READY, WATCHDOG, STOPPING) and signal handling.
