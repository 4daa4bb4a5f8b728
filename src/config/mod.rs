//! Daemon configuration (built-in defaults; UCI file later).
