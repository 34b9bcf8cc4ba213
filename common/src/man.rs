//! The hand-written parts of a tool's man page: clap renders the synopsis
//! and options, and each tool adds these sections so that every page has
//! EXIT STATUS, FILES, EXAMPLES and the JSON it reads and writes.

/// Extra man page sections, as plain text paragraphs (one per line).
#[derive(Debug, Clone, Copy)]
pub struct ManExtra {
    /// What the tool reads on stdin and writes on stdout.
    pub json: &'static str,
    pub exit_status: &'static str,
    pub files: &'static str,
    pub examples: &'static str,
    pub see_also: &'static str,
}

/// The FILES text shared by every tool that opens the state root.
pub const STATE_FILES: &str = "\
$KIST_ROOT, default /var/lib/kist (root) or $XDG_DATA_HOME/kist\n\
    The state root; see kist-state(5).\n\
oci-layout, index.json, blobs/sha256/\n\
    The image store, an OCI image layout.";
