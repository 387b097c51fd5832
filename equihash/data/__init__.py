"""Image banks, mosaic builders and their noise, the procedural database and its labels."""
