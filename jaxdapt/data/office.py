"""Office-31, Office-Home, VisDA-2017 and PACS from folders you already have.

Each domain is a builder config (`office31/amazon`, `office_home/real_world`,
`visda2017/synthetic`, `pacs/sketch`) with one split, 'train', holding all its images:
the unsupervised-DA protocols train on every source image and evaluate on every target
image. Classes are the folder names, sorted; labels are their indices. Published image
counts (checked at generation, printed when they differ) are those of the releases the
papers use. Layouts, env vars and archive notes: docs/datasets.md.
"""

from __future__ import annotations

from jaxdapt.data.folder_builders import FolderDomain, FolderImageBuilder


class Office31(FolderImageBuilder):
  """Office-31 (Saenko et al., ECCV 2010): amazon, dslr, webcam; 31 office objects."""

  name = "office31"
  TITLE = "Office-31"
  CLASSES = (
    "back_pack",
    "bike",
    "bike_helmet",
    "bookcase",
    "bottle",
    "calculator",
    "desk_chair",
    "desk_lamp",
    "desktop_computer",
    "file_cabinet",
    "headphones",
    "keyboard",
    "laptop_computer",
    "letter_tray",
    "mobile_phone",
    "monitor",
    "mouse",
    "mug",
    "paper_notebook",
    "pen",
    "phone",
    "printer",
    "projector",
    "punchers",
    "ring_binder",
    "ruler",
    "scissors",
    "speaker",
    "stapler",
    "tape_dispenser",
    "trash_can",
  )
  DOMAINS = tuple(
    FolderDomain(d, (f"{d}/images",), f"image_list/{d}.txt", n)
    for d, n in (("amazon", 2817), ("dslr", 498), ("webcam", 795))
  )


class OfficeHome(FolderImageBuilder):
  """Office-Home (Venkateswara et al., CVPR 2017): Art, Clipart, Product, Real World; 65 classes."""

  name = "office_home"
  TITLE = "Office-Home"
  CLASSES = (
    "Alarm_Clock",
    "Backpack",
    "Batteries",
    "Bed",
    "Bike",
    "Bottle",
    "Bucket",
    "Calculator",
    "Calendar",
    "Candles",
    "Chair",
    "Clipboards",
    "Computer",
    "Couch",
    "Curtains",
    "Desk_Lamp",
    "Drill",
    "Eraser",
    "Exit_Sign",
    "Fan",
    "File_Cabinet",
    "Flipflops",
    "Flowers",
    "Folder",
    "Fork",
    "Glasses",
    "Hammer",
    "Helmet",
    "Kettle",
    "Keyboard",
    "Knives",
    "Lamp_Shade",
    "Laptop",
    "Marker",
    "Monitor",
    "Mop",
    "Mouse",
    "Mug",
    "Notebook",
    "Oven",
    "Pan",
    "Paper_Clip",
    "Pen",
    "Pencil",
    "Postit_Notes",
    "Printer",
    "Push_Pin",
    "Radio",
    "Refrigerator",
    "Ruler",
    "Scissors",
    "Screwdriver",
    "Shelf",
    "Sink",
    "Sneakers",
    "Soda",
    "Speaker",
    "Spoon",
    "TV",
    "Table",
    "Telephone",
    "ToothBrush",
    "Toys",
    "Trash_Can",
    "Webcam",
  )
  # The original archive names the fourth domain 'Real World'; TLlib renamed it 'Real_World'.
  DOMAINS = (
    FolderDomain("art", ("Art",), "image_list/Art.txt", 2427),
    FolderDomain("clipart", ("Clipart",), "image_list/Clipart.txt", 4365),
    FolderDomain("product", ("Product",), "image_list/Product.txt", 4439),
    FolderDomain("real_world", ("Real_World", "Real World"), "image_list/Real_World.txt", 4357),
  )


class VisDA2017(FolderImageBuilder):
  """VisDA-2017 classification (Peng et al., 2017): synthetic renderings (its train/
  folder) and real COCO crops (its validation/ folder); 12 classes."""

  name = "visda2017"
  TITLE = "VisDA-2017"
  CLASSES = (
    "aeroplane",
    "bicycle",
    "bus",
    "car",
    "horse",
    "knife",
    "motorcycle",
    "person",
    "plant",
    "skateboard",
    "train",
    "truck",
  )
  DOMAINS = (
    FolderDomain("synthetic", ("train",), "image_list/train.txt", 152397),
    FolderDomain("real", ("validation",), "image_list/validation.txt", 55388),
  )


class Pacs(FolderImageBuilder):
  """PACS (Li et al., ICCV 2017): photo, art painting, cartoon, sketch; 7 classes. The
  folder is the archive's kfold/ (DomainBed renames it PACS/)."""

  name = "pacs"
  TITLE = "PACS"
  CLASSES = ("dog", "elephant", "giraffe", "guitar", "horse", "house", "person")
  DOMAINS = tuple(
    FolderDomain(d, (d,), f"image_list/{d}_all.txt", n)
    for d, n in (("art_painting", 2048), ("cartoon", 2344), ("photo", 1670), ("sketch", 3929))
  )
