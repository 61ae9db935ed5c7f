"""compare: expand families into variants, run them on the same splits and seeds, and
summarise the results with statistics."""
