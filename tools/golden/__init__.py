"""One module per op or block; each defines make(out_dir)."""
