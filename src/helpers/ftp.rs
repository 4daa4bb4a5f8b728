//! FTP helper (placeholder until the parser lands).
