"""vary-region command-line tool."""
