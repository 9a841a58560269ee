"""Small ground-floor helpers: files, imports by dotted path, seeding, network sizes, held-constant
parameters, the non-finite guard."""
