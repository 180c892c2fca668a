"""Running entry scripts: loading them, the executor interface, and its local and Ray implementations."""
