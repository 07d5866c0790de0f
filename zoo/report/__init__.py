"""Report: plots, tables and the HTML report, from stored results. May import every layer up to
``zoo.evaluate``; builds output, never trains or scores."""
