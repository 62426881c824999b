"""The only modules that write SQL. One module per aggregate."""
