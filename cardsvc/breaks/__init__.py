"""Break items: everything the books cannot settle on their own, in one table for every domain."""
