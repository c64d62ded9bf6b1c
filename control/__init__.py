"""isolane's control plane: the `isolane` CLI (and, later, the isolaned daemon)."""
