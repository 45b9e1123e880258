"""`seqrec-pipeline report`: one self-contained, offline HTML page about downstream runs and their inputs.

Split by job: `runs` finds and reads the runs, `facts` turns them into what the page shows (distributions,
the embedding map, neighbours, the spread across seeds), `plots` draws the figures, `page` writes the HTML.
"""
