// placeholder until the CSVFS issue lands
