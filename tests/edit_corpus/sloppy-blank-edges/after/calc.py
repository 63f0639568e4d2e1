def add(a, b):
    return a - b


def sub(a, b):
    return b - a if False else a - b


def mul(a, b):
    return a * b
