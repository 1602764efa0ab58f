import Foundation
import Glibc
import Testing
import TestSupport

/// Live migration of a VM between two nodes with a real hypervisor (QEMU, TCG, no guest OS), its disk an image
/// on the volume opened through each node's own mount: what a cluster shared volume is for. The destination
/// must read what the source wrote just before the switch, take over QEMU's image locks, and keep them from
/// every other writer and from the paused source. Needs qemu-system-x86 (`bash scripts/install-deps.sh
/// --hypervisor`); CI runs this suite in a step of its own.
extension Mounted {
    @Suite struct LiveMigrationTests {
        static let imageSize = 4 << 20
        static let chunk = 64 << 10

        /// `body(volume, [coordinator's mountpoint, other node's mountpoint], image name)` with a zeroed image of
        /// `format` created through the coordinator's mount.
        static func withImage(_ format: String, _ body: (TestVolume, [String], String) throws -> Void) throws {
            _ = try QEMU.hypervisor()
            try withVolume(.follower) { volume in
                let nodes = [volume.coordinatorMountpoint, volume.mountpoint]
                let image = "disk.\(format)"
                let created = try QEMU.img(["create", "-f", format, nodes[0] + "/" + image, "\(imageSize)"])
                try #require(created.succeeded, "\(created)")
                try body(volume, nodes, image)
            }
        }

        /// Writes `pattern` over one chunk at `offset` from inside the VM.
        static func write(_ machine: QEMUMachine, _ pattern: UInt8, at offset: Int, into model: inout [UInt8],
                          sourceLocation: SourceLocation = #_sourceLocation) throws {
            let output = try machine.qemuIO("write -P \(pattern) \(offset) \(chunk)")
            #expect(output.contains("wrote \(chunk)/\(chunk) bytes at offset \(offset)"), "\(output)", sourceLocation: sourceLocation)
            model.replaceSubrange(offset..<offset + chunk, with: repeatElement(pattern, count: chunk))
        }

        /// Reads one chunk at `offset` from inside the VM, checked against `pattern` by qemu-io itself.
        static func expectRead(_ machine: QEMUMachine, _ pattern: UInt8, at offset: Int, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let output = try machine.qemuIO("read -P \(pattern) \(offset) \(chunk)")
            #expect(output.contains("read \(chunk)/\(chunk) bytes at offset \(offset)") && !output.contains("Pattern verification failed"),
                    "pattern \(pattern) at \(offset): \(output)", sourceLocation: sourceLocation)
        }

        /// A VM on `path` (under each node's mountpoint), started on the first node and migrated twenty times,
        /// alternating, each time after a write the destination must read (and the round before's); `afterEach`
        /// runs after each migration. Every QEMU started goes into `machines`; the migration times, in ms.
        static func migrateTwentyTimes(_ volume: TestVolume, _ nodes: [String], path: String, format: String, model: inout [UInt8],
                                       machines: inout [QEMUMachine], afterEach: (Int) throws -> Void = { _ in }) throws -> [Int] {
            var running = try QEMUMachine(image: nodes[0] + "/" + path, format: format, directory: volume.directory)
            machines.append(running)
            var node = 0
            var times: [Int] = []
            for round in 0..<20 {
                let pattern = UInt8(0x10 + round), offset = (1 + round) * chunk
                try write(running, pattern, at: offset, into: &model)
                node = 1 - node
                let destination = try QEMUMachine(image: nodes[node] + "/" + path, format: format, incoming: true, directory: volume.directory)
                machines.append(destination)
                times.append(try running.migrate(to: destination))
                #expect(try destination.status() == "VM status: running", "round \(round)")
                try expectRead(destination, pattern, at: offset)
                if round > 0 { try expectRead(destination, 0x10 + UInt8(round - 1), at: round * chunk) }
                running.stop()
                running = destination
                try afterEach(round)
            }
            return times
        }

        /// The image's guest-visible bytes, read after every QEMU has stopped: a qcow2 image converted to raw
        /// outside the mount first.
        static func guestBytes(_ path: String, format: String, scratch: URL) throws -> [UInt8] {
            guard format == "qcow2" else { return try readFile(path) }
            let raw = scratch.appendingPathComponent("final.raw").path
            let converted = try QEMU.img(["convert", "-f", "qcow2", "-O", "raw", path, raw])
            try #require(converted.succeeded, "\(converted)")
            defer { unlink(raw) }
            return try readFile(raw)
        }

        /// QEMU refuses to live-migrate a VM whose disk it opens as VHDX; through its raw view (the disk as raw,
        /// written into the VHDX by whichever node owns it) it migrates, 20 times back and forth, and the file
        /// stays a VHDX that checks clean and holds exactly what the VM wrote. `differencing`: the disk is a child
        /// of a base that a second VM's child, running on the other node throughout, reads too.
        @Test(arguments: ["dynamic", "differencing"]) func aVHDXDiskMigratesThroughItsRawView(_ kind: String) throws {
            _ = try QEMU.hypervisor()
            try withVolume(.follower) { volume in
                let nodes = [volume.coordinatorMountpoint, volume.mountpoint]
                let image = "disk.vhdx", raw = ".csvfs/raw/disk.vhdx"
                var model = [UInt8](repeating: 0, count: Self.imageSize)
                var machines: [QEMUMachine] = []
                defer { machines.forEach { $0.stop() } }
                var neighbour: QEMUMachine?
                if kind == "dynamic" {
                    try #require(try QEMU.img(["create", "-f", "vhdx", "-o", "subformat=dynamic", nodes[0] + "/" + image, "\(Self.imageSize)"]).succeeded)
                    // What QEMU alone does with the VHDX itself.
                    let direct = try QEMUMachine(image: nodes[0] + "/" + image, format: "vhdx", directory: volume.directory)
                    let waiting = try QEMUMachine(image: nodes[1] + "/" + image, format: "vhdx", incoming: true, directory: volume.directory)
                    let refused = try direct.monitor.command("migrate -d tcp:127.0.0.1:\(waiting.incomingPort!)")
                    #expect(refused.contains("does not support live migration"), "QEMU on the VHDX itself: \(refused)")
                    direct.stop()
                    waiting.stop()
                } else {
                    try #require(try QEMU.img(["create", "-f", "vhdx", "-o", "subformat=dynamic", nodes[0] + "/base.vhdx", "\(Self.imageSize)"]).succeeded)
                    try #require(try QEMU.io(nodes[0] + "/base.vhdx", format: "vhdx", "write -P 0x33 0 1M").succeeded)
                    model.replaceSubrange(0..<(1 << 20), with: repeatElement(0x33, count: 1 << 20))
                    for child in [image, "other.vhdx"] {
                        try DiskTools.run(["vhdtool", "create", "-f", "vhdx", "-b", nodes[0] + "/base.vhdx", nodes[0] + "/" + child])
                    }
                    let other = try QEMUMachine(image: nodes[1] + "/.csvfs/raw/other.vhdx", format: "raw", directory: volume.directory)
                    machines.append(other)
                    neighbour = other
                }
                let times = try Self.migrateTwentyTimes(volume, nodes, path: raw, format: "raw", model: &model, machines: &machines) { round in
                    guard let neighbour else { return }
                    // The other VM on the same base: the base's data, and its own writes, through its own disk.
                    try Self.expectRead(neighbour, 0x33, at: (1 << 20) - Self.chunk)
                    var ignored = [UInt8](repeating: 0, count: Self.imageSize)
                    try Self.write(neighbour, 0xe0 + UInt8(round % 16), at: (2 << 20) + round * Self.chunk, into: &ignored)
                }
                print("20 live migrations of a \(kind) VHDX through its raw view: total times \(times) ms")
                machines.forEach { $0.stop() }
                let check = try DiskTools.run(["vhdtool", "check", nodes[0] + "/" + image], mustSucceed: false)
                #expect(check.succeeded, "\(check)")
                let flattened = volume.directory.appendingPathComponent("flattened.raw").path
                defer { unlink(flattened) }
                if kind == "dynamic" {
                    let qemuCheck = try QEMU.img(["check", "-f", "vhdx", nodes[0] + "/" + image])
                    #expect(qemuCheck.succeeded, "\(qemuCheck)")
                    try #require(try QEMU.img(["convert", "-f", "vhdx", "-O", "raw", nodes[0] + "/" + image, flattened]).succeeded)
                } else {
                    try DiskTools.run(["vhdtool", "convert", "-O", "raw", nodes[0] + "/" + image, flattened])
                }
                let bytes = try readFile(flattened)
                let firstDifference = bytes.indices.first { $0 >= model.count || bytes[$0] != model[$0] }
                #expect(bytes.count == model.count && firstDifference == nil,
                        "the image differs from the model first at byte \(firstDifference ?? -1)")
            }
        }

        @Test(arguments: ["raw", "qcow2"]) func aVMMovesToTheOtherNodeWithItsDiskAndItsLocks(_ format: String) throws {
            try Self.withImage(format) { volume, nodes, image in
                var model = [UInt8](repeating: 0, count: Self.imageSize)
                let source = try QEMUMachine(image: nodes[0] + "/" + image, format: format, directory: volume.directory)
                defer { source.stop() }
                let destination = try QEMUMachine(image: nodes[1] + "/" + image, format: format, incoming: true, directory: volume.directory)
                defer { destination.stop() }
                #expect(try destination.status() == "VM status: paused (inmigrate)")

                try Self.write(source, 0xaa, at: 0, into: &model)
                let milliseconds = try source.migrate(to: destination)
                print("live migration (\(format)) from the coordinator's node to the other: total \(milliseconds) ms")
                #expect(try destination.status() == "VM status: running")
                #expect(try source.status() == "VM status: paused (postmigrate)")
                try Self.expectRead(destination, 0xaa, at: 0)
                try Self.write(destination, 0x55, at: Self.chunk, into: &model)
                try Self.expectRead(destination, 0x55, at: Self.chunk)

                for node in nodes {
                    let third = try QEMU.io(node + "/" + image, format: format, "write 0 4k")
                    #expect(!third.succeeded && third.stderr.contains(QEMU.writeLockRefused), "a third writer through \(node): \(third)")
                }
                let resumed = try source.monitor.command("cont")
                #expect(resumed.contains(QEMU.writeLockRefused), "the source resumed after it migrated away: \(resumed)")
                #expect(try source.status() == "VM status: paused (postmigrate)")

                source.stop()
                destination.stop()
                #expect(try Self.guestBytes(nodes[0] + "/" + image, format: format, scratch: volume.directory) == model,
                        "the image after both VMs stopped")
            }
        }

        /// Twenty migrations, alternating between the nodes, each after a write the destination must see: a VM
        /// that moves back and forth (maintenance, balancing) loses nothing on either node's mount.
        @Test(arguments: ["raw", "qcow2"]) func twentyMigrationsBackAndForthKeepEveryWrite(_ format: String) throws {
            try Self.withImage(format) { volume, nodes, image in
                var model = [UInt8](repeating: 0, count: Self.imageSize)
                var machines: [QEMUMachine] = []
                defer { machines.forEach { $0.stop() } }
                let times = try Self.migrateTwentyTimes(volume, nodes, path: image, format: format, model: &model, machines: &machines)
                print("20 live migrations (\(format)) back and forth: total times \(times) ms")
                machines.forEach { $0.stop() }
                let bytes = try Self.guestBytes(nodes[0] + "/" + image, format: format, scratch: volume.directory)
                #expect(bytes.count == model.count)
                let firstDifference = bytes.indices.first { $0 >= model.count || bytes[$0] != model[$0] }
                #expect(firstDifference == nil, "the image differs from the model first at byte \(firstDifference ?? -1)")
            }
        }
    }
}
