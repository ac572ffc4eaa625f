def process(msg):
    return {}
