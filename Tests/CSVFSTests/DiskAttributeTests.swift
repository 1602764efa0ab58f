import Foundation
import Glibc
import Testing
import TestSupport
import VHDFormat

/// The read-only `user.vhd.*` attributes of VHD and VHDX files on the volume, checked against what
/// `vhdtool info --json` says of the same file read through the mount.
extension Mounted {
    @Suite struct DiskAttributeTests {
        /// Images qemu-img and vhdtool make, each compared with vhdtool's facts, differencing chains included
        /// (qemu-img cannot make differencing VHD or VHDX: "Backing file not supported").
        @Test(arguments: MetadataMode.allCases) func attributesMatchVhdtoolInfo(_ metadataMode: MetadataMode) throws {
            try withVolume(metadataMode) { volume in
                try sys("mkdir") { mkdir(volume.path("sub"), 0o755) }
                let made: [(name: String, command: [String])] = [
                    ("qemu-fixed.vhd", ["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed", volume.path("qemu-fixed.vhd"), "8M"]),
                    ("qemu-dynamic.vhd", ["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=dynamic", volume.path("qemu-dynamic.vhd"), "24M"]),
                    ("qemu-fixed.vhdx", ["qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=fixed", volume.path("qemu-fixed.vhdx"), "8M"]),
                    ("qemu-dynamic.vhdx", ["qemu-img", "create", "-q", "-f", "vhdx", "-o", "subformat=dynamic,block_size=8M",
                                           volume.path("qemu-dynamic.vhdx"), "40M"]),
                    ("tool-fixed.vhd", ["vhdtool", "create", "-f", "vhd", "--fixed", volume.path("tool-fixed.vhd"), "4M"]),
                    ("tool-base.vhd", ["vhdtool", "create", "-f", "vhd", volume.path("tool-base.vhd"), "16M"]),
                    ("tool-child.vhd", ["vhdtool", "create", "-f", "vhd", "-b", volume.path("tool-base.vhd"), volume.path("tool-child.vhd")]),
                    ("tool-fixed.vhdx", ["vhdtool", "create", "-f", "vhdx", "--fixed", "--logical-sector-size", "4096",
                                         volume.path("tool-fixed.vhdx"), "8M"]),
                    ("tool-base.vhdx", ["vhdtool", "create", "-f", "vhdx", "--block-size", "1M", volume.path("tool-base.vhdx"), "16M"]),
                    // A chain across directories (the locator is ..\tool-base.vhdx), two levels deep.
                    ("sub/tool-child.vhdx", ["vhdtool", "create", "-f", "vhdx", "-b", volume.path("tool-base.vhdx"),
                                             volume.path("sub/tool-child.vhdx")]),
                    ("sub/tool-grandchild.vhdx", ["vhdtool", "create", "-f", "vhdx", "-b", volume.path("sub/tool-child.vhdx"),
                                                  volume.path("sub/tool-grandchild.vhdx")]),
                ]
                for (_, command) in made { try DiskTools.run(command) }
                for (name, _) in made {
                    let path = volume.path(name)
                    let chain = try DiskTools.info(path)
                    let attributes = try vhdAttributes(path)
                    expectAttributes(attributes, match: chain[0], name)
                    #expect(attributes["user.vhd.chain_depth"] == String(chain.count), "\(name)")
                    #expect(attributes["user.vhd.error"] == nil, "\(name): \(attributes["user.vhd.error"] ?? "")")
                    if chain.count > 1 {
                        #expect(attributes["user.vhd.parent"] == chain[1].path, "\(name)")
                        #expect(attributes["user.vhd.parent_identity_ok"] == "yes", "\(name)")
                        #expect(chain[0].parent?.identity == chain[1].identity, "vhdtool checked the same link")
                    } else {
                        #expect(attributes["user.vhd.parent"] == nil && attributes["user.vhd.parent_identity_ok"] == nil, "\(name)")
                    }
                }
                // What the facts must be, independent of vhdtool (which could share a bug with the attributes).
                let qemuDynamic = try vhdAttributes(volume.path("qemu-dynamic.vhdx"))
                #expect(qemuDynamic["user.vhd.virtual_size"] == String(40 << 20) && qemuDynamic["user.vhd.block_size"] == String(8 << 20))
                #expect(qemuDynamic["user.vhd.type"] == "dynamic" && qemuDynamic["user.vhd.format"] == "vhdx")
                #expect(try vhdAttributes(volume.path("qemu-fixed.vhd"))["user.vhd.type"] == "fixed")
                #expect(try vhdAttributes(volume.path("tool-fixed.vhdx"))["user.vhd.logical_sector_size"] == "4096")
                let grandchild = try vhdAttributes(volume.path("sub/tool-grandchild.vhdx"))
                #expect(grandchild["user.vhd.type"] == "differencing" && grandchild["user.vhd.chain_depth"] == "3")
                #expect(grandchild["user.vhd.parent"] == volume.path("sub/tool-child.vhdx"))
                #expect(try vhdAttributes(volume.path("sub/tool-child.vhdx"))["user.vhd.parent"] == volume.path("tool-base.vhdx"))

                // A rename (no lookup follows it in the kernel) keeps the chain found.
                #expect(renameErrno(volume.path("sub/tool-child.vhdx"), volume.path("sub/renamed-child.vhdx")) == 0)
                let renamed = try vhdAttributes(volume.path("sub/tool-grandchild.vhdx"))
                #expect(renamed["user.vhd.error"]?.contains("parent not found") == true, "the grandchild's locators name the old name")
                let child = try vhdAttributes(volume.path("sub/renamed-child.vhdx"))
                #expect(child["user.vhd.parent"] == volume.path("tool-base.vhdx") && child["user.vhd.chain_depth"] == "2")
            }
        }

        @Test func plainFilesHaveNone() throws {
            try withVolume { volume in
                // Named like images, but not images by content.
                let named = volume.path("disk.vhdx"), text = volume.path("notes.vhd"), empty = volume.path("empty.vhd")
                try writeFile(named, patternBytes(count: 3 << 20, seed: 7))
                // The VHD cookie inside, but neither at the start (a dynamic VHD's footer copy) nor in the last 512 bytes.
                try writeFile(text, Array("the word conectix\n".utf8) + [UInt8](repeating: 10, count: 600))
                try writeFile(empty, [])
                for path in [named, text, empty, volume.path("")] {
                    #expect(try listxattr(path).get().filter { $0.hasPrefix("user.vhd.") }.isEmpty, "\(path)")
                    #expect(getxattr(path, "user.vhd.format").errno == ENODATA, "\(path)")
                }
                // A plain file's own user.vhd.* attributes keep working as any other user attribute.
                #expect(setxattrErrno(named, "user.vhd.note", Array("mine".utf8)) == 0)
                #expect(setxattrErrno(named, "user.other", [1, 2]) == 0)
                #expect(try getxattr(named, "user.vhd.note").get() == Array("mine".utf8))
                #expect(Set(try listxattr(named).get()) == ["user.vhd.note", "user.other"])
                #expect(removexattrErrno(named, "user.vhd.note") == 0)
                #expect(try listxattr(named).get() == ["user.other"])
                // "vhdtool info" agrees that these are not images.
                #expect(try DiskTools.run(["vhdtool", "info", named], mustSucceed: false).status != 0)
            }
        }

        @Test func attributesAreReadOnlyOnImages() throws {
            try withVolume { volume in
                let image = volume.path("disk.vhdx")
                try DiskTools.run(["qemu-img", "create", "-q", "-f", "vhdx", image, "16M"])
                let before = try vhdAttributes(image)
                #expect(before["user.vhd.format"] == "vhdx")
                #expect(setxattrErrno(image, "user.vhd.format", Array("vhd".utf8)) == EPERM)
                #expect(setxattrErrno(image, "user.vhd.virtual_size", Array("1".utf8), flags: LinuxFlags.xattrReplace) == EPERM)
                #expect(setxattrErrno(image, "user.vhd.new_name", Array("x".utf8)) == EPERM)
                #expect(removexattrErrno(image, "user.vhd.format") == EPERM)
                #expect(removexattrErrno(image, "user.vhd.missing") == EPERM)
                #expect(try vhdAttributes(image) == before)
                // Other user attributes of an image stay the image's own.
                #expect(setxattrErrno(image, "user.owner_note", Array("kept".utf8)) == 0)
                #expect(try getxattr(image, "user.owner_note").get() == Array("kept".utf8))
                #expect(try listxattr(image).get().contains("user.owner_note"))
                #expect(removexattrErrno(image, "user.owner_note") == 0)
                #expect(try vhdAttributes(image) == before)
            }
        }

        @Test func damagedImagesReportAnError() throws {
            try withVolume { volume in
                let vhdx = volume.path("broken.vhdx"), vhd = volume.path("broken.vhd")
                try DiskTools.run(["qemu-img", "create", "-q", "-f", "vhdx", vhdx, "16M"])
                try DiskTools.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed", vhd, "4M"])
                let goodVHDX = try vhdAttributes(vhdx)
                #expect(goodVHDX["user.vhd.error"] == nil && goodVHDX["user.vhd.virtual_size"] == String(16 << 20))
                #expect(try vhdAttributes(vhd)["user.vhd.error"] == nil)

                // Both VHDX headers (64 and 128 KiB), and the fixed VHD's footer after its cookie (its only copy).
                try overwrite(vhdx, at: 64 << 10, with: [UInt8](repeating: 0xAB, count: 4096))
                try overwrite(vhdx, at: 128 << 10, with: [UInt8](repeating: 0xAB, count: 4096))
                let vhdSize = Int(try lstatOrThrow(vhd).st_size)
                try overwrite(vhd, at: vhdSize - 512 + 16, with: [UInt8](repeating: 0x5A, count: 48))

                for (path, format) in [(vhdx, "vhdx"), (vhd, "vhd")] {
                    let attributes = try vhdAttributes(path)
                    let error = try #require(attributes["user.vhd.error"], "\(path): \(attributes)")
                    #expect(attributes["user.vhd.format"] == format)
                    // The others are not made up; asking for them answers ENODATA, and the server lives on.
                    for name in ["user.vhd.type", "user.vhd.virtual_size", "user.vhd.identity", "user.vhd.chain_depth"] {
                        #expect(getxattr(path, name).errno == ENODATA, "\(path) \(name)")
                    }
                    // A damaged disk still has an owner: nobody, once the writes that damaged it are closed.
                    #expect(Set(try listxattr(path).get()) == ["user.vhd.format", "user.vhd.error", "user.vhd.owner"])
                    #expect(eventually(5) { (try? getxattr(path, "user.vhd.owner").get()) == Array("none".utf8) })
                    // The same words as vhdtool uses for the same file.
                    let info = try DiskTools.run(["vhdtool", "info", "--json", path], mustSucceed: false)
                    #expect(info.status != 0)
                    #expect(info.stderr.contains(error), "vhdtool: \(info.stderr)\nattribute: \(error)")
                }
                #expect(try readRange(vhdx, offset: 0, count: 8) == Array("vhdxfile".utf8), "the mount still serves the file")

                // Repaired by writing a good image over it: the attributes follow the new content.
                try DiskTools.run(["qemu-img", "create", "-q", "-f", "vhdx", vhdx, "16M"])
                let repaired = try vhdAttributes(vhdx)
                #expect(repaired["user.vhd.error"] == nil && repaired["user.vhd.virtual_size"] == String(16 << 20))
                #expect(repaired["user.vhd.identity"] != goodVHDX["user.vhd.identity"], "a new image, a new identity")
            }
        }

        /// Random damage to the structures of qemu-made images: the server answers every time, and it agrees
        /// with vhdtool on whether (and how) the image can be read.
        @Test func randomDamageIsReportedNotFatal() throws {
            try withVolume { volume in
                let seed = SeededRandom.seed(from: "CSVFS_SEED", test: "random image damage")
                var random = SeededRandom(seed: seed)
                var pristine: [(name: String, bytes: [UInt8])] = []
                for (name, format, options) in [("d.vhdx", "vhdx", "subformat=dynamic"), ("f.vhdx", "vhdx", "subformat=fixed"),
                                                ("d.vhd", "vpc", "subformat=dynamic"), ("f.vhd", "vpc", "subformat=fixed")] {
                    try DiskTools.run(["qemu-img", "create", "-q", "-f", format, "-o", options, volume.path(name), "4M"])
                    pristine.append((name, try readFile(volume.path(name))))
                }
                var outcomes: [String: Int] = [:]
                for round in 0..<12 {
                    for (name, original) in pristine {
                        var bytes = original
                        // Where the structures are: the first 4 MiB of a VHDX, a VHD's header and BAT and its footer.
                        let regions = name.hasSuffix(".vhdx") ? [0..<min(bytes.count, 4 << 20)]
                            : [0..<min(bytes.count, 4096), (bytes.count - 512)..<bytes.count]
                        for _ in 0..<Int.random(in: 1...4, using: &random) {
                            let region = regions.randomElement(using: &random)!
                            let start = Int.random(in: region, using: &random)
                            for offset in start..<min(start + Int.random(in: 1...32, using: &random), region.upperBound) {
                                bytes[offset] = UInt8.random(in: 0...255, using: &random)
                            }
                        }
                        let path = volume.path(name)
                        try writeFile(path, bytes)
                        let attributes = try vhdAttributes(path)
                        let info = try DiskTools.run(["vhdtool", "info", "--json", path], mustSucceed: false)
                        let context: Comment = "seed \(seed) round \(round) \(name): \(attributes)\nvhdtool: \(info.stderr)"
                        outcomes[attributes.isEmpty ? "not an image" : attributes["user.vhd.error"] == nil ? "readable" : "damaged", default: 0] += 1
                        if attributes.isEmpty {
                            #expect(info.stderr.contains("not a VHD or VHDX image"), context)
                        } else if let error = attributes["user.vhd.error"] {
                            #expect(!info.succeeded && info.stderr.contains(error), context)
                            #expect(getxattr(path, "user.vhd.virtual_size").errno == ENODATA, context)
                        } else {
                            #expect(info.succeeded, context)
                            if info.succeeded {
                                let facts = try JSONDecoder().decode([DiskFacts].self, from: Data(info.stdout.utf8))
                                expectAttributes(attributes, match: facts[0], "\(context)")
                            }
                        }
                    }
                }
                print("random image damage: \(outcomes)")
                // 48 damaged images, most of the damage inside VHD headers and footers: some must be unreadable.
                #expect(outcomes["damaged", default: 0] > 0, "seed \(seed): \(outcomes)")
                #expect(try listDirectory(volume.mountpoint).count >= pristine.count, "the server still answers")
            }
        }

        @Test(arguments: ["vhd", "vhdx"]) func missingOrWrongParent(_ format: String) throws {
            try withVolume { volume in
                let base = volume.path("base.\(format)"), child = volume.path("child.\(format)")
                try DiskTools.run(["vhdtool", "create", "-f", format, base, "16M"])
                try DiskTools.run(["vhdtool", "create", "-f", format, "-b", base, child])
                let linked = try vhdAttributes(child)
                #expect(linked["user.vhd.parent"] == base && linked["user.vhd.chain_depth"] == "2")

                try sys("unlink") { unlink(base) }
                let orphan = try vhdAttributes(child)
                let error = try #require(orphan["user.vhd.error"])
                #expect(error.contains("parent not found") && error.contains(base), "\(error)")
                #expect(orphan["user.vhd.parent"] == nil && orphan["user.vhd.chain_depth"] == nil)
                #expect(orphan["user.vhd.parent_identity"] == linked["user.vhd.parent_identity"], "the child's own facts stay")
                #expect(orphan["user.vhd.type"] == "differencing")
                let info = try DiskTools.run(["vhdtool", "info", child], mustSucceed: false)
                #expect(info.status != 0 && info.stderr.contains(error), "vhdtool: \(info.stderr)\nattribute: \(error)")

                // Another disk under the parent's name: found, but not the parent the child was made from.
                try DiskTools.run(["vhdtool", "create", "-f", format, base, "16M"])
                let impostor = try vhdAttributes(child)
                #expect(impostor["user.vhd.parent"] == base)
                #expect(impostor["user.vhd.parent_identity_ok"] == "no")
                #expect(impostor["user.vhd.error"]?.contains("expects") == true, "\(impostor["user.vhd.error"] ?? "no error")")
                #expect(impostor["user.vhd.chain_depth"] == "2")
            }
        }

        /// The kernel sends no lookup after a rename it made itself: parents are still found below the new names.
        @Test func chainsFollowRenamedDirectories() throws {
            try withVolume { volume in
                for directory in ["one", "other"] { try sys("mkdir") { mkdir(volume.path(directory), 0o755) } }
                try DiskTools.run(["vhdtool", "create", "-f", "vhdx", volume.path("one/base.vhdx"), "8M"])
                try DiskTools.run(["vhdtool", "create", "-f", "vhdx", "-b", volume.path("one/base.vhdx"), volume.path("one/child.vhdx")])
                try DiskTools.run(["vhdtool", "create", "-f", "vhd", volume.path("other/base.vhdx"), "8M"])
                #expect(try vhdAttributes(volume.path("one/child.vhdx"))["user.vhd.parent"] == volume.path("one/base.vhdx"))

                #expect(renameErrno(volume.path("one"), volume.path("two")) == 0)
                let moved = try vhdAttributes(volume.path("two/child.vhdx"))
                #expect(moved["user.vhd.parent"] == volume.path("two/base.vhdx"), "\(moved)")
                #expect(moved["user.vhd.parent_identity_ok"] == "yes" && moved["user.vhd.error"] == nil)

                // Swapped with a directory holding another base.vhdx: both directories swap their names, and the
                // child still finds its own parent, now under "other".
                #expect(renameErrno(volume.path("two"), volume.path("other"), flags: LinuxFlags.renameExchange) == 0)
                let swapped = try vhdAttributes(volume.path("other/child.vhdx"))
                #expect(swapped["user.vhd.parent"] == volume.path("other/base.vhdx"), "\(swapped)")
                #expect(swapped["user.vhd.parent_identity_ok"] == "yes" && swapped["user.vhd.chain_depth"] == "2")
                #expect(try vhdAttributes(volume.path("two/base.vhdx"))["user.vhd.format"] == "vhd")

                // The child moved beside the other disk: found under its parent's name, but not its parent.
                #expect(renameErrno(volume.path("other/child.vhdx"), volume.path("two/child.vhdx")) == 0)
                let stranger = try vhdAttributes(volume.path("two/child.vhdx"))
                #expect(stranger["user.vhd.parent"] == volume.path("two/base.vhdx"), "\(stranger)")
                #expect(stranger["user.vhd.parent_identity_ok"] == "no")
            }
        }

        @Test func attributesFollowWrites() throws {
            try withVolume { volume in
                let image = volume.path("growing.vhdx")
                try DiskTools.run(["qemu-img", "create", "-q", "-f", "vhdx", image, "64M"])
                let created = try vhdAttributes(image)
                #expect(created["user.vhd.virtual_size"] == String(64 << 20))

                // The first write a guest could see gives a VHDX a new DataWriteGuid, its identity.
                try DiskTools.run(["qemu-io", "-f", "vhdx", "-c", "write -P 7 0 1M", image])
                let written = try vhdAttributes(image)
                #expect(written["user.vhd.identity"] != created["user.vhd.identity"])
                expectAttributes(written, match: try DiskTools.info(image)[0], image)

                // qemu-img cannot resize VHD or VHDX: the image made again at another size, on the same inode.
                let ino = try lstatOrThrow(image).st_ino
                try DiskTools.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=16M", image, "96M"])
                #expect(try lstatOrThrow(image).st_ino == ino)
                let remade = try vhdAttributes(image)
                #expect(remade["user.vhd.virtual_size"] == String(96 << 20) && remade["user.vhd.block_size"] == String(16 << 20))
                expectAttributes(remade, match: try DiskTools.info(image)[0], image)

                // The same inode rewritten in place (no new file, no rename) with another format's bytes.
                let elsewhere = volume.path("other.vhd")
                try DiskTools.run(["qemu-img", "create", "-q", "-f", "vpc", "-o", "subformat=fixed", elsewhere, "4M"])
                try writeFile(image, try readFile(elsewhere))
                #expect(try lstatOrThrow(image).st_ino == ino)
                let rewritten = try vhdAttributes(image)
                #expect(rewritten["user.vhd.format"] == "vhd" && rewritten["user.vhd.type"] == "fixed")
                expectAttributes(rewritten, match: try DiskTools.info(image)[0], image)

                // Only the footer's cookie made it an image: without it the file is plain again.
                let size = Int(try lstatOrThrow(image).st_size)
                try overwrite(image, at: size - 512, with: Array("notavhd!".utf8))
                #expect(try listxattr(image).get().filter { $0.hasPrefix("user.vhd.") }.isEmpty)
                #expect(getxattr(image, "user.vhd.format").errno == ENODATA)
            }
        }
    }
}

/// The `user.vhd.*` attributes of `path`, by name, read through the kernel.
private func vhdAttributes(_ path: String) throws -> [String: String] {
    var values: [String: String] = [:]
    for name in try listxattr(path).get() where name.hasPrefix("user.vhd.") {
        values[name] = String(decoding: try getxattr(path, name).get(), as: UTF8.self)
    }
    return values
}

/// The attributes the image's own facts give, compared with vhdtool's facts of the same file.
private func expectAttributes(_ attributes: [String: String], match facts: DiskFacts, _ name: String,
                              sourceLocation: SourceLocation = #_sourceLocation) {
    let expected: [(String, String?)] = [
        ("user.vhd.format", facts.format.rawValue),
        ("user.vhd.type", facts.type.rawValue),
        ("user.vhd.virtual_size", String(facts.virtualSize)),
        ("user.vhd.block_size", facts.blockSize > 0 ? String(facts.blockSize) : nil),
        ("user.vhd.logical_sector_size", String(facts.logicalSectorSize)),
        ("user.vhd.physical_sector_size", String(facts.physicalSectorSize)),
        ("user.vhd.identity", facts.identity.isEmpty ? nil : facts.identity),
        ("user.vhd.disk_id", facts.diskIdentifier),
        ("user.vhd.parent_identity", facts.parent?.identity),
    ]
    for (attribute, value) in expected {
        #expect(attributes[attribute] == value, "\(name): \(attribute)", sourceLocation: sourceLocation)
    }
}

/// Writes `bytes` at `offset` of an existing file, through the mount.
private func overwrite(_ path: String, at offset: Int, with bytes: [UInt8]) throws {
    let fd = try sys("open") { open(path, O_WRONLY) }
    defer { close(fd) }
    try writeAll(fd, bytes, at: offset)
}
