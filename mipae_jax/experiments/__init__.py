"""The paper's experiment: the MIPAE vs DRNET reproduction, its report, the
comparison of evaluated runs and the paper's own numbers."""
