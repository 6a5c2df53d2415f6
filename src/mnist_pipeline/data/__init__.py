"""The data: the formats a dataset comes in (formats: idx_files with fetch and idx, folder, table for CSV; what
they return, dataset), pictures to images (pictures), split (split), the prepared dataset on disk (prepared)."""
