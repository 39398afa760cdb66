"""Reporting: gate verdicts, the summary tables, the pages and plots of ``snakemake --report``."""
