"""The application: the command line, the HTTP app (API, codec server, citizen pages), the
client SDK, the conformance kit, the demo, billing, the BPF catalog page and the embedded stack.

It is the top layer: it may use every layer below it, and nothing below imports it.
"""
