// placeholder until the VHDFormat issue lands
