import Testing

/// Every suite that mounts a volume nests in here, so they run one test at a time:
/// each mount has its own server process and the machine has two cores.
@Suite(.serialized) enum Mounted {}
