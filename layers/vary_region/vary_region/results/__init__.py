"""A finished task brought home: confirmed through Fetch, images copied safely, result.json / error.json."""
