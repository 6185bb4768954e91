"""The queue's rules, written once above the storage drivers.

Each rule is a statement plan (see ``storage.plans``): a generator that yields the named
statements it needs and decides what to do with their rows, run by any driver over an
asynchronous or synchronous connection. Drivers only execute the steps — encode parameters,
choose a connection and a transaction — so the rules cannot drift apart between databases.
"""
