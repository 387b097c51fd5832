"""OpenImages banks and Perlin files (equihash.data.openimages): lazy readers against h5py,
content identity, bad inputs, the photo-folder importer and the embedded default bank."""

import hashlib
import logging
import pickle

import h5py
import numpy as np
import pytest
from PIL import Image

from equihash.data import openimages as oi
from equihash.data.keyed import KeyedRandom
from equihash.io import InputError

SHAPE = oi.OPENIMAGES_IMAGE_SHAPE


def random_images(n, shape=SHAPE, dtype=np.uint8, stream="images"):
    info = np.iinfo(dtype)
    return KeyedRandom(0, "test", stream).at(0).integers(info.min, info.max, size=(n, *shape),
                                                         endpoint=True, dtype=dtype)


def write_h5(path, datasets, **options):
    with h5py.File(path, "w") as f:
        for name, data in datasets.items():
            f.create_dataset(name, data=data, **options)
    return path


@pytest.fixture(scope="module")
def images():
    return random_images(150)


@pytest.fixture(scope="module")
def bank_dirs(tmp_path_factory, images):
    """The same 150 images as a contiguous bank and as a chunked, gzip-compressed bank."""
    plain, packed = tmp_path_factory.mktemp("plain"), tmp_path_factory.mktemp("packed")
    for split in oi.OPENIMAGES_SPLITS:
        write_h5(plain / f"{split}.hdf5", {"images": images})
        write_h5(packed / f"{split}.hdf5", {"images": images}, chunks=(1, *SHAPE), compression="gzip")
    return plain, packed


def h5py_rows(path, ids, dataset="images"):
    with h5py.File(path, "r") as f:
        return np.stack([f[dataset][int(i)] for i in np.ravel(ids)]).reshape(*np.shape(ids), *f[dataset].shape[1:])


IDS = KeyedRandom(0, "test", "ids").at(0).integers(0, 150, size=64)
IDS = np.concatenate([IDS, IDS[:10], [0, 149, 149]])  # repeated ids, both ends


# --------------------------------------------------------------------------- lazy readers
def test_contiguous_bank_is_a_readonly_memmap_equal_to_h5py(bank_dirs):
    plain, _ = bank_dirs
    bank = oi.read_openimages_bank(plain, "test")
    assert isinstance(bank, np.memmap) and not bank.flags.writeable
    assert bank.shape == (150, *SHAPE) and bank.dtype == np.uint8
    got = bank[IDS]
    assert type(got) is np.ndarray
    np.testing.assert_array_equal(got, h5py_rows(plain / "test.hdf5", IDS))
    pairs = IDS[:40].reshape(20, 2)  # mosaic labels index the bank with (batch, m) ids
    np.testing.assert_array_equal(bank[pairs], h5py_rows(plain / "test.hdf5", pairs))
    assert oi.openimages_split_sizes(plain) == {"train": 150, "valid": 150, "test": 150}


def test_chunked_gzip_bank_reads_equal_h5py(bank_dirs, images):
    _, packed = bank_dirs
    bank = oi.read_openimages_bank(packed, "valid")
    assert isinstance(bank, oi.H5ImageRows) and len(bank) == 150 and bank.shape == (150, *SHAPE)
    got = bank[IDS]
    assert type(got) is np.ndarray and got.dtype == np.uint8
    np.testing.assert_array_equal(got, h5py_rows(packed / "valid.hdf5", IDS))
    pairs = IDS[:40].reshape(20, 2)
    np.testing.assert_array_equal(bank[pairs], images[pairs])
    np.testing.assert_array_equal(bank[-1], images[149])
    np.testing.assert_array_equal(bank[7], images[7])
    np.testing.assert_array_equal(bank[10:40:3], images[10:40:3])
    np.testing.assert_array_equal(bank[40:10:-4], images[40:10:-4])
    np.testing.assert_array_equal(bank[np.array([-1, -150, 3])], images[[149, 0, 3]])
    mask = np.zeros(150, bool)
    mask[[5, 99]] = True
    np.testing.assert_array_equal(bank[mask], images[[5, 99]])
    assert bank[np.array([], dtype=np.int64)].shape == (0, *SHAPE)
    assert bank[5:5].shape == (0, *SHAPE)
    with pytest.raises(IndexError):
        bank[np.array([150])]
    with pytest.raises(IndexError):
        bank[-151]
    clone = pickle.loads(pickle.dumps(bank))  # for worker processes: reopens its file
    np.testing.assert_array_equal(clone[IDS], images[IDS])
    assert clone.identity == bank.identity
    bank.close()
    np.testing.assert_array_equal(np.asarray(bank), images)


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 64])
def test_chunked_reads_touch_each_chunk_once(tmp_path, monkeypatch, chunk_rows):
    data = random_images(200, (4, 5), np.int8, "small")
    path = write_h5(tmp_path / "small.hdf5", {"x": data}, chunks=(chunk_rows, 4, 5), compression="gzip")
    rows = oi.open_image_array(path, "x", (4, 5), np.int8)
    spans = []
    real = h5py.Dataset.read_direct

    def record(self, dest, source_sel=None, dest_sel=None):
        spans.append((source_sel.start, source_sel.stop))
        return real(self, dest, source_sel, dest_sel)

    monkeypatch.setattr(h5py.Dataset, "read_direct", record)
    draw = KeyedRandom(0, "test", "chunked").at(chunk_rows)
    runs = np.concatenate([np.arange(5, 30), np.arange(60, 62), np.arange(130, 145)])  # consecutive runs
    for ids in (draw.integers(0, 200, 300), draw.integers(0, 200, 7), runs, runs[::-1], np.array([199, 0, 199])):
        spans.clear()
        np.testing.assert_array_equal(rows[ids], data[ids])
        assert spans
        touched = [set(range(start // chunk_rows, (stop - 1) // chunk_rows + 1)) for start, stop in spans]
        assert sum(map(len, touched)) == len(set().union(*touched))  # no chunk read twice
        assert all(start in set(ids.tolist()) and stop - 1 in set(ids.tolist()) for start, stop in spans)


def test_in_memory_bank_equals(bank_dirs, images):
    for directory in bank_dirs:
        bank = oi.read_openimages_bank(directory, "train", in_memory=True)
        assert isinstance(bank, oi.InMemoryImages) and not isinstance(bank, np.memmap)
        np.testing.assert_array_equal(bank, images)
        assert type(bank[IDS]) is np.ndarray and type(bank[3:9]) is np.ndarray
        np.testing.assert_array_equal(bank[IDS], images[IDS])


def test_identity_equal_for_equal_content_and_sensitive_to_sampled_rows(tmp_path, bank_dirs, images):
    plain, packed = bank_dirs
    identities = {oi.read_openimages_bank(plain, "test").identity,
                  oi.read_openimages_bank(packed, "test").identity,
                  oi.read_openimages_bank(plain, "test", in_memory=True).identity,
                  oi.content_identity(images)}
    assert len(identities) == 1
    reference = identities.pop()
    assert len(reference) == 64 and int(reference, 16) >= 0

    rows = oi.identity_rows(150)
    assert rows[0] == 0 and rows[-1] == 149 and len(rows) == oi.IDENTITY_SAMPLE_ROWS + 2
    assert np.array_equal(rows, np.unique(rows))
    sampled, unsampled = int(rows[len(rows) // 2]), int(np.setdiff1d(np.arange(150), rows)[0])
    for row, changes in ((sampled, True), (0, True), (149, True), (unsampled, False)):
        edited = images.copy()
        edited[row, 90, 90, 1] ^= 1
        path = write_h5(tmp_path / f"edited{row}.hdf5", {"images": edited})
        identity = oi.open_image_array(path, "images", SHAPE, np.uint8).identity
        assert (identity != reference) is changes  # an unsampled row is the documented blind spot
    assert oi.content_identity(images[:149]) != reference  # the shape is hashed


def test_unwritten_contiguous_dataset_reads_its_fill_value(tmp_path):
    path = tmp_path / "fill.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", shape=(3, *SHAPE), dtype=np.uint8, fillvalue=7)  # no storage yet
    bank = oi.open_image_array(path, "images", SHAPE, np.uint8)
    assert isinstance(bank, oi.H5ImageRows)
    assert (bank[np.array([2, 0])] == 7).all()


# --------------------------------------------------------------------------- Perlin files
PERLIN = oi.PERLIN_FIELD_SHAPE


def test_read_perlin_equals_h5py(tmp_path):
    r1 = random_images(5, PERLIN, np.int8, "r1")
    r2 = random_images(5, PERLIN, np.int8, "r2")
    path = write_h5(tmp_path / "perlin.hdf5", {"resolution1": r1, "resolution2": r2})
    for in_memory in (False, True):
        a, b = oi.read_perlin(path, in_memory=in_memory)
        assert a.shape == b.shape == (5, *PERLIN) and a.dtype == b.dtype == np.int8
        np.testing.assert_array_equal(a[[4, 0, 4]], r1[[4, 0, 4]])
        np.testing.assert_array_equal(b[[1, 1, 3]], r2[[1, 1, 3]])
        assert a.identity != b.identity


@pytest.mark.parametrize("datasets, expected", [
    ({"resolution1": np.zeros((2, *PERLIN), np.int8)}, "no dataset 'resolution2' of shape (n, 180, 270) int8"),
    ({"resolution1": np.zeros((2, 180, 180), np.int8), "resolution2": np.zeros((2, *PERLIN), np.int8)},
     "'resolution1' has shape (2, 180, 180), expected (n, 180, 270)"),
    ({"resolution1": np.zeros((2, *PERLIN), np.uint8), "resolution2": np.zeros((2, *PERLIN), np.int8)},
     "'resolution1' has dtype uint8, expected int8"),
    ({"resolution1": np.zeros((2, *PERLIN), np.int8), "resolution2": np.zeros((3, *PERLIN), np.int8)},
     "expected the same n in both"),
    ({"resolution1": np.zeros((0, *PERLIN), np.int8), "resolution2": np.zeros((0, *PERLIN), np.int8)},
     "'resolution1' is empty"),
])
def test_bad_perlin_file(tmp_path, datasets, expected):
    path = write_h5(tmp_path / "perlin.hdf5", datasets)
    with pytest.raises(InputError) as error:
        oi.read_perlin(path)
    assert str(path) in str(error.value) and expected in str(error.value)


# --------------------------------------------------------------------------- bad banks
def bad_bank(kind, directory):
    path = directory / "test.hdf5"
    if kind == "text":
        path.write_text("not an HDF5 file\n")
    elif kind == "truncated":
        write_h5(path, {"images": random_images(20)})
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    elif kind == "no_images":
        write_h5(path, {"x": np.zeros((2, 28, 28), np.uint8), "labels": np.zeros(2, np.int64)})
    elif kind == "group":
        with h5py.File(path, "w") as f:
            f.create_group("images")
    elif kind == "dtype":
        write_h5(path, {"images": np.zeros((2, *SHAPE), np.float32)})
    elif kind == "chw":
        write_h5(path, {"images": np.zeros((2, 3, 180, 180), np.uint8)})
    elif kind == "gray":
        write_h5(path, {"images": np.zeros((2, 180, 180), np.uint8)})
    elif kind == "empty":
        write_h5(path, {"images": np.zeros((0, *SHAPE), np.uint8)})
    return path


@pytest.mark.parametrize("kind, expected", [
    ("missing", "file not found (expected an HDF5 file with dataset 'images' of shape (n, 180, 180, 3) uint8)"),
    ("text", "not a readable HDF5 file"),
    ("truncated", "truncated HDF5 file"),
    ("no_images", "no dataset 'images' of shape (n, 180, 180, 3) uint8"),
    ("group", "datasets found: none"),
    ("dtype", "dataset 'images' has dtype float32, expected uint8"),
    ("chw", "has shape (2, 3, 180, 180), expected (n, 180, 180, 3)"),
    ("gray", "has shape (2, 180, 180), expected (n, 180, 180, 3)"),
    ("empty", "dataset 'images' is empty (shape (0, 180, 180, 3)); expected at least one row"),
])
def test_bad_bank_file(tmp_path, kind, expected):
    path = bad_bank(kind, tmp_path)
    for in_memory in (False, True):
        with pytest.raises(InputError) as error:
            oi.read_openimages_bank(tmp_path, "test", in_memory=in_memory)
        message = str(error.value)
        assert message.startswith(str(path)) and expected in message
        if kind == "no_images":
            assert "datasets found: ['labels', 'x']" in message


def test_split_sizes_name_the_bad_split_file(tmp_path, bank_dirs):
    plain, _ = bank_dirs
    for split in ("train", "test"):
        (tmp_path / f"{split}.hdf5").write_bytes((plain / f"{split}.hdf5").read_bytes())
    with pytest.raises(InputError, match=f"{tmp_path / 'valid.hdf5'}: file not found"):
        oi.openimages_split_sizes(tmp_path)
    write_h5(tmp_path / "valid.hdf5", {"images": np.zeros((3, 180, 180, 4), np.uint8)})
    with pytest.raises(InputError, match=r"valid.hdf5: dataset 'images' has shape \(3, 180, 180, 4\), "
                                         r"expected \(n, 180, 180, 3\) \(OpenImages bank split 'valid'"):
        oi.openimages_split_sizes(tmp_path)
    write_h5(tmp_path / "valid.hdf5", {"images": np.zeros((3, *SHAPE), np.uint8)})
    assert oi.openimages_split_sizes(tmp_path) == {"train": 150, "valid": 3, "test": 150}


def test_unknown_split(tmp_path):
    with pytest.raises(InputError, match=r"unknown OpenImages split 'training', expected one of \['train'"):
        oi.read_openimages_bank(tmp_path, "training")


# --------------------------------------------------------------------------- photo folder importer
def photo(width, height, stream):
    return KeyedRandom(0, "photos", stream).at(0).integers(0, 255, size=(height, width, 3), endpoint=True,
                                                           dtype=np.uint8)


def expected_split(relative):
    """Brute force of the documented rule: sha256 prefix / 2**64 against 0.8, 0.9."""
    u = int(hashlib.sha256(relative.encode()).hexdigest()[:16], 16) / 2 ** 64
    return "train" if u < 0.8 else "valid" if u < 0.9 else "test"


@pytest.fixture
def photo_folder(tmp_path):
    folder = tmp_path / "photos"
    (folder / "trip" / "day2").mkdir(parents=True)
    wide = photo(300, 180, "wide")
    Image.fromarray(wide).save(folder / "wide.png")
    for i in range(24, 40):  # names whose hash puts img26 and img37 in valid and img34 in test
        Image.fromarray(photo(200 + 7 * (i - 24), 190, f"p{i}")).save(folder / "trip" / f"img{i:02d}.jpg", quality=90)
    Image.fromarray(photo(190, 260, "tall")).save(folder / "trip" / "day2" / "TALL.JPEG")
    Image.fromarray(photo(181, 181, "upper")).save(folder / "trip" / "day2" / "Upper.PNG")
    (folder / "trip" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (folder / "notes.txt").write_text("ignored")
    return folder, wide


def read_split_files(directory):
    out = {}
    for split in oi.OPENIMAGES_SPLITS:
        with h5py.File(directory / f"{split}.hdf5", "r") as f:
            out[split] = (f["images"][:], [s.decode() for s in f["source_path"][:]], dict(f.attrs))
    return out


def test_import_photo_folder(tmp_path, photo_folder, caplog):
    folder, wide = photo_folder
    with caplog.at_level(logging.WARNING, logger="equihash"):
        counts = oi.import_photo_folder(folder, tmp_path / "bank")
    assert f"{folder / 'trip' / 'broken.jpg'}: skipped, not a readable image" in caplog.text
    files = read_split_files(tmp_path / "bank")
    names = oi.find_photos(folder)
    readable = [n for n in names if n != "trip/broken.jpg"]
    assert len(names) == 20 and "notes.txt" not in names and "trip/day2/TALL.JPEG" in names
    assert sorted(sum((files[s][1] for s in files), [])) == readable
    for split, (rows, sources, attrs) in files.items():
        assert counts[split] == len(rows) == len(sources) > 0 and rows.shape[1:] == SHAPE
        assert sources == sorted(sources)  # relative-path order within a split
        assert all(expected_split(name) == split for name in sources)
        assert attrs["source"] == "photo folder photos"
        for row, name in zip(rows, sources):  # every row is load_photo of its source
            np.testing.assert_array_equal(row, oi.load_photo(folder / name))
    split = expected_split("wide.png")
    row = files[split][1].index("wide.png")
    np.testing.assert_array_equal(files[split][0][row], wide[:, 60:240])  # 180x300: columns 60..240
    assert oi.read_openimages_bank(tmp_path / "bank", split)[row].tobytes() == wide[:, 60:240].tobytes()
    assert not list((tmp_path / "bank").glob(".*"))  # no staging or temporary left

    oi.import_photo_folder(folder, tmp_path / "again")  # identical inputs, identical bytes
    for name in ("train.hdf5", "valid.hdf5", "test.hdf5"):
        assert (tmp_path / "bank" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()

    Image.fromarray(photo(200, 200, "new")).save(folder / "trip" / "img34b.png")  # adding a photo moves none
    (folder / "trip" / "img25.jpg").unlink()  # nor does removing one
    oi.import_photo_folder(folder, tmp_path / "added")
    added = read_split_files(tmp_path / "added")
    for split in oi.OPENIMAGES_SPLITS:
        old_rows, old_sources, _ = files[split]
        rows, sources, _ = added[split]
        old = [i for i, name in enumerate(old_sources) if name != "trip/img25.jpg"]
        assert set(sources) - {old_sources[i] for i in old} <= {"trip/img34b.png"}
        kept = [sources.index(old_sources[i]) for i in old]
        np.testing.assert_array_equal(rows[kept], old_rows[old])
    assert "trip/img34b.png" in added[expected_split("trip/img34b.png")][1]


def test_load_photo_known_answers(tmp_path):
    halves = np.zeros((360, 600, 3), np.uint8)  # left half red, right half blue; shorter side 360 -> 180
    halves[:, :300, 0] = 255
    halves[:, 300:, 2] = 255
    Image.fromarray(halves).save(tmp_path / "halves.png")
    square = oi.load_photo(tmp_path / "halves.png")
    assert square.shape == SHAPE  # resized to 180x300, crop columns 60..240: the edge at column 90
    assert (square[:, :85] == [255, 0, 0]).all() and (square[:, 96:] == [0, 0, 255]).all()

    landscape = photo(300, 180, "exif")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the stored image must be rotated 90 degrees clockwise
    Image.fromarray(landscape).save(tmp_path / "rotated.png", exif=exif)
    np.testing.assert_array_equal(oi.load_photo(tmp_path / "rotated.png"), np.rot90(landscape, k=-1)[60:240])

    sixteen = (np.arange(180 * 180, dtype=np.uint32).reshape(180, 180) * 2).astype(np.uint16)
    Image.fromarray(sixteen).save(tmp_path / "sixteen.png")
    grey = oi.load_photo(tmp_path / "sixteen.png")
    np.testing.assert_array_equal(grey, np.repeat((sixteen >> 8).astype(np.uint8)[..., None], 3, axis=2))


def test_photo_split_is_the_documented_hash_rule():
    names = [f"dir/photo{i}.jpg" for i in range(300)]
    assigned = [oi.photo_split(name) for name in names]
    assert assigned == [expected_split(name) for name in names]
    assert {s: assigned.count(s) for s in oi.OPENIMAGES_SPLITS} == {
        s: sum(expected_split(n) == s for n in names) for s in oi.OPENIMAGES_SPLITS}


def test_import_bad_folders(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(InputError, match="not a directory"):
        oi.import_photo_folder(tmp_path / "absent", out)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=f"{empty}: no .jpg/.jpeg/.png files found"):
        oi.import_photo_folder(empty, out)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "a.jpg").write_bytes(b"garbage")
    (corrupt / "b.PNG").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.raises(InputError, match=f"{corrupt}: none of the 2 .jpg/.jpeg/.png files is a readable image"):
        oi.import_photo_folder(corrupt, out)
    single = tmp_path / "single"
    single.mkdir()
    Image.fromarray(photo(180, 180, "one")).save(single / "one.png")
    with pytest.raises(InputError, match=rf"{single}: no readable photo falls in split '(valid|test)'"):
        oi.import_photo_folder(single, out)
    with pytest.raises(InputError, match="fractions: shares .* sum to 1.1, expected 1"):
        oi.import_photo_folder(single, out, fractions={"train": 0.9, "valid": 0.1, "test": 0.1})
    with pytest.raises(InputError, match="fractions.valid: expected a positive share"):
        oi.import_photo_folder(single, out, fractions={"train": 1.0, "valid": 0, "test": 0.0})
    assert not out.exists() or not any(out.iterdir())  # nothing written, no staging file left


def test_split_files_are_written_all_or_nothing(tmp_path, photo_folder, monkeypatch):
    folder, _ = photo_folder
    real = oi._write_split_file

    def fail_on_test(tmp, content):
        if "test.hdf5" in tmp.name:
            raise OSError("disk full")
        real(tmp, content)

    monkeypatch.setattr(oi, "_write_split_file", fail_on_test)
    with pytest.raises(OSError, match="disk full"):
        oi.import_photo_folder(folder, tmp_path / "bank")
    assert not (tmp_path / "bank").exists()  # no file, and not even the folder the import made

    commits = []  # a failure after two files were renamed removes those two as well
    real_replace = oi.os.replace

    def replace(src, dst):
        commits.append(dst)
        if len(commits) == 3:
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(oi, "_write_split_file", real)
    monkeypatch.setattr("equihash.io.os.replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        oi.import_photo_folder(folder, tmp_path / "bank")
    assert len(commits) == 3 and not (tmp_path / "bank").exists()


# --------------------------------------------------------------------------- embedded default bank
@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    directory = tmp_path_factory.mktemp("embedded")
    counts = oi.prepare_embedded_bank(directory)
    with_provenance = {}
    for split in oi.OPENIMAGES_SPLITS:
        with h5py.File(directory / f"{split}.hdf5", "r") as f:
            with_provenance[split] = (f["images"][:], [s.decode() for s in f["source_file"][:]], f["crop_box"][:])
    return directory, counts, with_provenance


def test_embedded_bank_contents(embedded):
    directory, counts, files = embedded
    assert counts == {"train": 63, "valid": 20, "test": 40}  # scikit-image 0.26: 132 crops, 9 near-constant
    assert counts == oi.EMBEDDED_SPLIT_SIZES
    assert oi.openimages_split_sizes(directory) == counts
    photos = {name: np.asarray(Image.open(oi.embedded_photo_dir() / name).convert("RGB"))
              for name in oi.EMBEDDED_PHOTOS}
    digests = set()
    for split, (images, sources, boxes) in files.items():
        assert images.shape == (counts[split], *SHAPE) and images.dtype == np.uint8
        assert len(set(sources)) >= 5  # every split mixes source photographs
        assert "motorcycle_right.png" not in sources and set(sources) <= set(oi.EMBEDDED_PHOTOS)
        assert not oi.near_constant(images).any()
        crop_order = [(oi.EMBEDDED_PHOTOS.index(source), top, left) for source, (left, top, _, _) in zip(sources, boxes)]
        assert crop_order == sorted(crop_order)  # photo order, then row-major grid order
        for image, source, (left, top, right, bottom) in zip(images, sources, boxes):  # each row is its crop
            np.testing.assert_array_equal(image, photos[source][top:bottom, left:right])
            digests.add(hashlib.sha256(image.tobytes()).hexdigest())
    assert len(digests) == sum(counts.values())  # no two identical crops in the bank


def test_embedded_bank_is_deterministic(embedded, tmp_path):
    directory, counts, _ = embedded
    assert oi.prepare_embedded_bank(tmp_path) == counts
    for split in oi.OPENIMAGES_SPLITS:
        assert (tmp_path / f"{split}.hdf5").read_bytes() == (directory / f"{split}.hdf5").read_bytes()
    other = oi.prepare_embedded_bank(tmp_path / "seed1", seed=1, splits={"valid": 10, "test": 30})
    assert other == {"train": 83, "valid": 10, "test": 30}
    with pytest.raises(InputError, match="leaves no train image of the 123"):
        oi.prepare_embedded_bank(tmp_path / "big", splits={"valid": 100, "test": 23})
    with pytest.raises(InputError, match="splits: expected positive integer sizes"):
        oi.prepare_embedded_bank(tmp_path / "bad", splits={"valid": 10})


def test_grid_crops_and_near_constant_known_answers():
    image = np.arange(400 * 590 * 3, dtype=np.int64).reshape(400, 590, 3)
    crops, boxes = oi.grid_crops(image, 180)
    assert boxes.tolist() == [[25, 20, 205, 200], [205, 20, 385, 200], [385, 20, 565, 200],
                              [25, 200, 205, 380], [205, 200, 385, 380], [385, 200, 565, 380]]
    for crop, (left, top, right, bottom) in zip(crops, boxes):
        np.testing.assert_array_equal(crop, image[top:bottom, left:right])

    noise = random_images(3, (180, 180, 3), stream="noise")
    flat = noise.copy()
    flat[0, :100] = 0  # 100/180 of the rows black: a flat background
    flat[1] = 200 + (noise[1] % 2)  # one grey level of variation: flat
    flat[2] = np.clip(100 + noise[2].astype(int) // 64, 0, 255)  # values 100..103, std ~1.1: featureless
    assert oi.near_constant(noise).tolist() == [False, False, False]
    assert oi.near_constant(flat).tolist() == [True, True, True]
