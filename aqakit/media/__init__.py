"""The toolkit plugin authors use: video IO, caches, safe pickles, drawing, weights, atomic files."""
