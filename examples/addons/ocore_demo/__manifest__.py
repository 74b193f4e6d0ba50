{
    'name': 'oCore demo',
    'summary': 'A small module the oCore demo deploys',
    'version': '1.0',
    'depends': ['base'],
    'license': 'LGPL-3',
    'installable': True,
}
