"""ACT (Zhao et al. 2023) with SRT's image-only input and relative action representations (Kim et al. 2024)."""
