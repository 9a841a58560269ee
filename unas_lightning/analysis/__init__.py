"""Judging architectures: rank correlations and supernet accuracy (``ranking``), the FMNIST-201 ground truth
(``fmnist201``), drawings of genotypes (``visualize``)."""
