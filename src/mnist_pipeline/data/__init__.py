"""The data: fetch and verify (fetch), parse IDX (idx), split (split), the prepared dataset on disk (prepared)."""
