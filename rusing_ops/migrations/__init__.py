"""migrations capability."""
