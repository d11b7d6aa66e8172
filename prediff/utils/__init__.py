"""Helpers shared by the sub-packages of prediff.

This package imports none of its modules, so that any of them (``prediff.utils.lazy`` above all, which every
package ``__init__`` uses) can be imported without loading the others.
"""
