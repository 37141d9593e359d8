"""Plain-text table printing shared by the benchmark scripts."""


def print_table(table):
    """Print rows (tuples of cells) as left-aligned columns."""
    widths = [max(len(str(row[k])) for row in table) for k in range(len(table[0]))]
    for row in table:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
