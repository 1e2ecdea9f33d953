"""Boot-storm benchmark: htekd against the C servers it replaces (in.tftpd, nginx, vsftpd).

Everything runs on loopback. `python -m bench --help` (or `bench/run --help`) for the figures.
"""
