"""One verb on local files (as copick's ``ops``): the stage commands without a cluster."""
