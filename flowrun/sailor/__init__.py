"""flowrun's sailor: the agent inside every Python step container.

It runs inside component images, not on the host, and depends only on the
standard library (its AMQP client is flowrun's own: contract/amqp.py),
cryptography and (for mapper steps) jsonata-python, and
on `flowrun.contract`, the one part of flowrun the images hold beside it. Imports
are relative: inside images the package is `flowrun.sailor` as on the host.
"""
