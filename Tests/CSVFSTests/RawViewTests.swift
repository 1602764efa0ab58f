import Foundation
import Glibc
import Testing
import TestSupport

/// `MOUNT/.csvfs/raw/PATH`: every VHD/VHDX file as its flattened virtual disk, read and written through the
/// kernel, checked against tools that read images on their own (libvhdi's vhdimount, qemu-img) and vhdtool.
extension Mounted {
    @Suite struct RawViewTests {
        static func raw(_ volume: TestVolume, _ path: String) -> String { volume.path(".csvfs/raw/" + path) }

        /// What `vhdtool convert -O raw` makes of the image.
        static func vhdtoolRaw(_ image: String, scratch: URL) throws -> [UInt8] {
            let out = scratch.appendingPathComponent("converted-\(UUID().uuidString.prefix(6)).raw").path
            defer { unlink(out) }
            try DiskTools.run(["vhdtool", "convert", "-O", "raw", image, out])
            return try readFile(out)
        }

        /// What libvhdi (which shares no code with us) reads as the image's disk.
        static func libvhdiRaw(_ image: String, scratch: URL) throws -> [UInt8] {
            try VhdiMount.withMount(image, in: scratch.path) { mountPoint in try readFile(try VhdiMount.topView(mountPoint)) }
        }

        /// Writes `bytes` at `offset` of the raw view and closes it (which flushes the image).
        static func writeRaw(_ path: String, _ bytes: [UInt8], at offset: Int) throws {
            let fd = try sys("open \(path)") { open(path, O_WRONLY) }
            defer { close(fd) }
            try writeAll(fd, bytes, at: offset)
        }

        /// Images of every kind, chains of depth 2 and 3 included, each holding data: base images written by
        /// qemu-io, differencing ones through the raw view itself (no other tool writes them), then every raw
        /// view equals vhdtool's conversion and libvhdi's view of the same file.
        @Test(arguments: MetadataMode.allCases) func everyKindOfImageReadsAsVhdtoolAndLibvhdiSeeIt(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                try sys("mkdir") { mkdir(volume.path("sub"), 0o755) }
                let bases: [(name: String, create: [String], qemuFormat: String)] = [
                    ("fixed.vhd", ["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed", volume.path("fixed.vhd"), "8M"], "vpc"),
                    ("dynamic.vhd", ["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic", volume.path("dynamic.vhd"), "24M"], "vpc"),
                    ("fixed.vhdx", ["qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=fixed", volume.path("fixed.vhdx"), "8M"], "vhdx"),
                    ("dynamic.vhdx", ["qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M",
                                      volume.path("dynamic.vhdx"), "24M"], "vhdx"),
                    // libvhdi looks for a parent only beside its child: each chain lives in one directory.
                    ("sub/base.vhd", ["vhdtool", "create", "-f", "vhd", volume.path("sub/base.vhd"), "16M"], "vpc"),
                    ("sub/base.vhdx", ["vhdtool", "create", "-f", "vhdx", "--block-size", "1M", volume.path("sub/base.vhdx"), "16M"], "vhdx"),
                ]
                for base in bases {
                    try DiskTools.run(base.create)
                    try DiskTools.run(["qemu-io", "-f", base.qemuFormat, "-c", "write -P 0x5a 1M 3M", "-c", "write -P 0xc3 7M 100k",
                                       volume.path(base.name)])
                }
                // Chains: base <- sub/child <- sub/grandchild, each written through its raw view where it overlaps the one below.
                for format in ["vhd", "vhdx"] {
                    try DiskTools.run(["vhdtool", "create", "-f", format, "-b", volume.path("sub/base.\(format)"), volume.path("sub/child.\(format)")])
                    try Self.writeRaw(Self.raw(volume, "sub/child.\(format)"), [UInt8](repeating: 0x11, count: 300_000), at: (2 << 20) + 512)
                    try DiskTools.run(["vhdtool", "create", "-f", format, "-b", volume.path("sub/child.\(format)"),
                                       volume.path("sub/grandchild.\(format)")])
                    try Self.writeRaw(Self.raw(volume, "sub/grandchild.\(format)"), [UInt8](repeating: 0x22, count: 8192), at: (3 << 20) - 4096)
                }
                let images = bases.map(\.name) + ["sub/child.vhd", "sub/child.vhdx", "sub/grandchild.vhd", "sub/grandchild.vhdx"]
                for image in images {
                    let viaRawView = try readFile(Self.raw(volume, image))
                    let expectedSize = try DiskTools.info(volume.path(image))[0].virtualSize
                    #expect(UInt64(viaRawView.count) == expectedSize, "\(image): the raw view is the virtual size")
                    #expect(UInt64(try lstatOrThrow(Self.raw(volume, image)).st_size) == expectedSize, "\(image): stat")
                    #expect(viaRawView == (try Self.vhdtoolRaw(volume.path(image), scratch: volume.directory)), "\(image) against vhdtool")
                    #expect(viaRawView == (try Self.libvhdiRaw(volume.path(image), scratch: volume.directory)), "\(image) against libvhdi")
                    #expect(viaRawView[(1 << 20)..<(4 << 20)].allSatisfy { $0 == 0x5a } || image.contains("child"),
                            "\(image): the data qemu-io wrote")
                }
                // Each layer's own bytes, known without any tool: the grandchild sees all three.
                let grandchild = try readFile(Self.raw(volume, "sub/grandchild.vhdx"))
                #expect(grandchild[0..<(1 << 20)].allSatisfy { $0 == 0 })
                #expect(grandchild[(1 << 20)..<((2 << 20) + 512)].allSatisfy { $0 == 0x5a })
                #expect(grandchild[((2 << 20) + 512)..<((2 << 20) + 512 + 300_000)].allSatisfy { $0 == 0x11 })
                #expect(grandchild[((2 << 20) + 512 + 300_000)..<((3 << 20) - 4096)].allSatisfy { $0 == 0x5a })
                #expect(grandchild[((3 << 20) - 4096)..<((3 << 20) + 4096)].allSatisfy { $0 == 0x22 })
                #expect(grandchild[((3 << 20) + 4096)..<(4 << 20)].allSatisfy { $0 == 0x5a })
                #expect(grandchild[(7 << 20)..<((7 << 20) + 102_400)].allSatisfy { $0 == 0xc3 })
            }
        }

        /// Seeded random writes through the raw view (sizes from 1 byte to 1 MiB, aligned and not, some with
        /// O_DIRECT), then the file is an image qemu-img and vhdtool check clean whose disk equals a model of
        /// the writes, as qemu-img (or, for a differencing image, vhdtool) converts it.
        @Test(arguments: ["dynamic.vhdx", "dynamic.vhd", "fixed.vhdx", "fixed.vhd", "child.vhdx"])
        func randomWritesLeaveAValidImageHoldingThem(_ image: String) throws {
            let seed = SeededRandom.seed(from: "CSVFS_RAW_SEED", test: "raw view random writes (\(image))")
            var random = SeededRandom(seed: seed)
            try withVolume { volume in
                let size = 32 << 20
                var model = [UInt8](repeating: 0, count: size)
                switch image {
                case "dynamic.vhdx":
                    try DiskTools.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M", volume.path(image), "\(size)"])
                case "dynamic.vhd":
                    try DiskTools.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic,force_size=on", volume.path(image), "\(size)"])
                case "fixed.vhdx":
                    try DiskTools.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=fixed", volume.path(image), "\(size)"])
                case "fixed.vhd":
                    try DiskTools.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed,force_size=on", volume.path(image), "\(size)"])
                default:
                    try DiskTools.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=2M", volume.path("base.vhdx"), "\(size)"])
                    try DiskTools.run(["qemu-io", "-f", "vhdx", "-c", "write -P 0x77 0 12M", volume.path("base.vhdx")])
                    model.replaceSubrange(0..<(12 << 20), with: repeatElement(0x77, count: 12 << 20))
                    try DiskTools.run(["vhdtool", "create", "-f", "vhdx", "-b", volume.path("base.vhdx"), volume.path(image)])
                }
                let raw = Self.raw(volume, image)
                #expect(Int(try lstatOrThrow(raw).st_size) == size)
                let buffered = try sys("open") { open(raw, O_RDWR) }
                defer { close(buffered) }
                let direct = try sys("open O_DIRECT") { open(raw, O_RDWR | LinuxFlags.oDirect) }
                defer { close(direct) }
                let aligned = try AlignedBuffer(size: 1 << 20)
                for round in 0..<120 {
                    let sizes = [1, 511, 512, 4096, 65536, 1 << 20, Int.random(in: 1...300_000, using: &random)]
                    var count = sizes.randomElement(using: &random)!
                    let useDirect = round % 3 == 0
                    if useDirect { count = max(4096, count / 4096 * 4096) }
                    var offset = Int.random(in: 0...(size - count), using: &random)
                    if useDirect { offset = offset / 4096 * 4096 }
                    let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
                    if useDirect {
                        aligned.fill(with: bytes)
                        #expect(pwrite(direct, aligned.pointer, count, off_t(offset)) == count, "round \(round), seed \(seed)")
                    } else {
                        try writeAll(buffered, bytes, at: offset)
                    }
                    model.replaceSubrange(offset..<offset + count, with: bytes)
                    if round % 40 == 39 { try sys("fsync") { fsync(buffered) } }
                }
                #expect(try readFile(raw) == model, "the raw view reads back the writes (seed \(seed))")
                close(buffered)
                close(direct)

                let check = try DiskTools.run(["vhdtool", "check", volume.path(image)], mustSucceed: false)
                #expect(check.succeeded, "vhdtool check (seed \(seed)): \(check)")
                let converted: [UInt8]
                if image == "child.vhdx" {
                    converted = try Self.vhdtoolRaw(volume.path(image), scratch: volume.directory)
                } else {
                    let format = image.hasSuffix(".vhd") ? "vpc" : "vhdx"
                    // qemu-img checks VHDX only (for vpc it answers "format does not support checks").
                    if format == "vhdx" {
                        let qemuCheck = try DiskTools.run(["qemu-img", "check", "-f", format, volume.path(image)], mustSucceed: false)
                        #expect(qemuCheck.succeeded, "qemu-img check (seed \(seed)): \(qemuCheck)")
                    }
                    let out = volume.directory.appendingPathComponent("qemu.raw").path
                    try DiskTools.run(["qemu-img", "convert", "-f", format, "-O", "raw", volume.path(image), out])
                    defer { unlink(out) }
                    converted = try readFile(out)
                }
                let firstDifference = converted.indices.first { $0 >= model.count || converted[$0] != model[$0] }
                #expect(converted.count == model.count && firstDifference == nil,
                        "converted image differs from the model at \(firstDifference ?? -1) (seed \(seed))")
            }
        }

        /// SEEK_DATA and SEEK_HOLE follow the image's allocation (1 MiB blocks here).
        @Test func seekDataAndHoleFollowTheAllocation() throws {
            try withVolume { volume in
                try DiskTools.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=1M", volume.path("d.vhdx"), "16M"])
                let raw = Self.raw(volume, "d.vhdx")
                let fd = try sys("open") { open(raw, O_RDONLY) }
                defer { close(fd) }
                let seekData: Int32 = 3, seekHole: Int32 = 4
                #expect(errnoOf { Int32(truncatingIfNeeded: lseek(fd, 0, seekData)) } == ENXIO, "an empty disk holds no data")
                try Self.writeRaw(raw, [1, 2, 3], at: (5 << 20) + 100)
                #expect(lseek(fd, 0, seekData) == 5 << 20)
                #expect(lseek(fd, 5 << 20, seekHole) == 6 << 20)
                #expect(lseek(fd, 6 << 20, seekHole) == 6 << 20)
                #expect(errnoOf { Int32(truncatingIfNeeded: lseek(fd, 6 << 20, seekData)) } == ENXIO)
            }
        }

        /// `.csvfs` is reached by name but never listed, nothing can be made or changed in it, and the raw
        /// view shows directories and images only, each disk at its virtual size and no larger.
        @Test func theRawViewIsHiddenReservedAndShowsOnlyDisks() throws {
            try withVolume { volume in
                try DiskTools.run(["qemu-img", "create", "-q", "-f", "vhdx", volume.path("disk.vhdx"), "4M"])
                try writeFile(volume.path("notes.txt"), Array("not a disk".utf8))
                try sys("mkdir") { mkdir(volume.path("vms"), 0o755) }
                #expect(!(try FileManager.default.contentsOfDirectory(atPath: volume.mountpoint)).contains(".csvfs"))
                #expect(try FileManager.default.contentsOfDirectory(atPath: volume.path(".csvfs")) == ["raw"])
                #expect(Set(try FileManager.default.contentsOfDirectory(atPath: volume.path(".csvfs/raw"))) == ["disk.vhdx", "vms"])
                var notShown = false
                if case .failure(let error) = lstatResult(Self.raw(volume, "notes.txt")) { notShown = error.code == ENOENT }
                #expect(notShown, "a file that is no image has no raw view")

                #expect(errnoOf { mkdir(volume.path(".csvfs"), 0o755) } == EEXIST)
                #expect(errnoOf { mkdir(volume.path(".csvfs/raw/new"), 0o755) } == EPERM)
                #expect(openErrno(volume.path(".csvfs/raw/new.vhdx"), O_CREAT | O_WRONLY, 0o644) == EPERM)
                #expect(errnoOf { unlink(Self.raw(volume, "disk.vhdx")) } == EPERM)
                #expect(errnoOf { rename(volume.path(".csvfs"), volume.path("moved")) } == EPERM)
                #expect(errnoOf { rename(volume.path("notes.txt"), volume.path(".csvfs/raw/notes.txt")) } == EPERM)
                #expect(errnoOf { link(volume.path("notes.txt"), volume.path(".csvfs/raw/linked")) } == EPERM)
                #expect(errnoOf { truncate(Self.raw(volume, "disk.vhdx"), 1 << 20) } == EPERM, "a disk's size is its image's")
                #expect(openErrno(Self.raw(volume, "disk.vhdx"), O_WRONLY | O_TRUNC, 0) == EPERM)

                let fd = try sys("open") { open(Self.raw(volume, "disk.vhdx"), O_RDWR) }
                defer { close(fd) }
                #expect(pwrite(fd, [UInt8](repeating: 9, count: 4096), 4096, off_t((4 << 20) - 1024)) == 1024, "cut at the end")
                #expect(errnoOf { pwrite(fd, [UInt8](repeating: 9, count: 10), 10, off_t(4 << 20)) } == ENOSPC, "past the end")
                #expect(Int(try lstatOrThrow(Self.raw(volume, "disk.vhdx")).st_size) == 4 << 20)
                #expect(try listxattr(Self.raw(volume, "disk.vhdx")).get().isEmpty)
            }
        }

        /// A damaged image and an image whose parent is missing fail their raw view with EIO and a log line
        /// naming the problem; another disk's raw view goes on working.
        @Test func aDamagedImageOrAMissingParentFailsWithEIO() throws {
            try withVolume { volume in
                try DiskTools.run(["qemu-img", "create", "-q", "-f", "vhdx", volume.path("good.vhdx"), "4M"])
                try DiskTools.run(["qemu-img", "create", "-q", "-f", "vhdx", volume.path("broken.vhdx"), "4M"])
                try DiskTools.run(["vhdtool", "create", "-f", "vhdx", volume.path("base.vhdx"), "4M"])
                try DiskTools.run(["vhdtool", "create", "-f", "vhdx", "-b", volume.path("base.vhdx"), volume.path("child.vhdx")])
                // Both headers.
                let fd = try sys("open") { open(volume.path("broken.vhdx"), O_WRONLY) }
                try writeAll(fd, [UInt8](repeating: 0xAB, count: 4096), at: 64 << 10)
                try writeAll(fd, [UInt8](repeating: 0xAB, count: 4096), at: 128 << 10)
                close(fd)
                try sys("rename") { rename(volume.path("base.vhdx"), volume.path("elsewhere.vhdx")) }

                #expect(openErrno(Self.raw(volume, "broken.vhdx"), O_RDONLY, 0) == EIO)
                #expect(openErrno(Self.raw(volume, "child.vhdx"), O_RDONLY, 0) == EIO)
                #expect(try readFile(Self.raw(volume, "good.vhdx")) == [UInt8](repeating: 0, count: 4 << 20))
                let log = volume.server?.stderrText ?? ""
                #expect(log.contains("raw view of \(volume.path("broken.vhdx"))") && log.contains("header"), "\(log.suffix(2000))")
                #expect(log.contains("raw view of \(volume.path("child.vhdx"))") && log.contains("parent"), "\(log.suffix(2000))")
            }
        }
    }
}
