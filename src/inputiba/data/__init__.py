"""Files and built-in data: image reading and atomic writing, offline assets fetched from package
registries, box annotations and dataset folders, the movie-review snippets."""
