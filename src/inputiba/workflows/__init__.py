"""One call per job: explain images, texts or a dataset; estimate and cache statistics; compare
methods. The command line is a thin layer over these functions."""
