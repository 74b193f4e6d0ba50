{
    'name': 'oCore demo: sales extension',
    'version': '1.0',
    'depends': ['ocore_demo'],
    'license': 'LGPL-3',
    'installable': True,
}
