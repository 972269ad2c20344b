def test_import():
    import ttc
